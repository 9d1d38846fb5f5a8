"""Our BERT against transformers.BertModel on the same weights and inputs: the textbook model (SDPA and the attention
written out) and the CPU's fast path (model/fast), on padded batches and unpadded ones."""

import pytest
import torch
import transformers

from minbert.data import DATASETS, Tokenizer, load_split, pad
from minbert.model import BertConfig, BertModel, fast, load_weights
from minbert.model.bert import BertSelfAttention
from minbert.model.fast import varlen
from minbert.model.fast.varlen import unpad as unpad_layout

TOL = 1e-4
# how our model runs: the textbook modules with SDPA or with attention written out; the CPU's fast path on a batch
# it runs padded (little padding) and on one it runs as flat real tokens
PATHS = ["textbook", "textbook-written-out", "cpu-padded", "cpu-unpadded"]


def on_path(model: BertModel, path: str, monkeypatch) -> BertModel:
    fast.install(model, "cpu" if path.startswith("cpu") else None)
    for m in model.modules():
        if type(m) is BertSelfAttention:
            m.sdpa = path != "textbook-written-out"
    monkeypatch.setattr(varlen, "MIN_PADDING", 1 if path == "cpu-unpadded" else 10**9)
    return model


def real_batch(data_root, ckpt, n=16):
    tok = Tokenizer.from_pretrained(ckpt)
    sents = [e.texts[0] for e in load_split(DATASETS["sst"], "dev", data_root)[:n]]
    return pad(tok.encode(sents, 128), tok.pad_id)


@pytest.mark.parametrize("path", PATHS)
def test_embedded_checkpoint_matches_transformers(data_root, ckpt, path, monkeypatch):
    ids, mask = real_batch(data_root, ckpt)
    assert (mask == 0).any(), "the batch must contain padding to test the mask path"
    ours = on_path(BertModel.from_pretrained(ckpt).eval(), path, monkeypatch)
    unpad = unpad_layout(mask) is not None
    assert unpad == (path == "cpu-unpadded")
    ref = transformers.BertModel.from_pretrained(ckpt, attn_implementation="eager").eval()
    with torch.no_grad():
        o = ours(ids, mask)
        r = ref(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    assert (o.last_hidden_state[real] - r.last_hidden_state[real]).abs().max() <= TOL
    assert (o.pooler_output - r.pooler_output).abs().max() <= TOL
    if unpad:  # no work on padding: its positions come out as zeros
        assert (o.last_hidden_state[~real] == 0).all()
    else:  # the padded computation: every position as transformers has it, padding included
        assert (o.last_hidden_state - r.last_hidden_state).abs().max() <= TOL


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_tiny_random_config_matches_transformers(act, monkeypatch):
    torch.manual_seed(0)
    cfg = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act=act,
    )
    ref = transformers.BertModel(transformers.BertConfig(**cfg, attn_implementation="eager")).eval()
    ours = BertModel(BertConfig(**cfg)).eval()
    load_weights(ours, ref.state_dict(), "reference")
    ids = torch.randint(1, 99, (5, 17))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[3, 2:] = 0
    types = torch.zeros_like(ids)
    types[:, 8:] = 1
    real = mask.bool()
    with torch.no_grad():
        r = ref(input_ids=ids, attention_mask=mask, token_type_ids=types)
        for path in PATHS:  # cpu-unpadded: this batch's 23 padding tokens run unpadded too
            o = on_path(ours, path, monkeypatch)(ids, mask, types)
            assert (o.last_hidden_state[real] - r.last_hidden_state[real]).abs().max() <= TOL, path
            assert (o.pooler_output - r.pooler_output).abs().max() <= TOL, path
            if path != "cpu-unpadded":  # padded: every position
                assert (o.last_hidden_state - r.last_hidden_state).abs().max() <= TOL, path


@pytest.mark.parametrize("path", PATHS)
def test_training_path_matches_transformers_outputs_and_gradients(data_root, ckpt, path, monkeypatch):
    """With gradients on, the CPU's attention is written out (fused QKV, additive mask); check it and its backward,
    unpadded (real tokens in length buckets) and padded, and the textbook model's."""
    ids, mask = real_batch(data_root, ckpt, n=8)
    ours = BertModel.from_pretrained(ckpt).eval()  # eval: no dropout, so both sides compute the same function
    on_path(ours, path, monkeypatch)
    ref = transformers.BertModel.from_pretrained(ckpt, attn_implementation="eager").eval()
    grads = []
    for model, out in ((ours, lambda: ours(ids, mask)), (ref, lambda: ref(input_ids=ids, attention_mask=mask))):
        o = out()
        (o.last_hidden_state[mask.bool()].pow(2).mean() + o.pooler_output.sum()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        grads.append(o.last_hidden_state.detach())
    real = mask.bool()
    assert (grads[1][real] - grads[3][real]).abs().max() <= TOL
    for name, g in grads[0].items():
        r = grads[2][name]
        assert (g - r).abs().max() <= 1e-4 * max(1.0, r.abs().max().item()), name


def test_parameter_names_are_the_hugging_face_ones(ckpt):
    ref = transformers.BertModel(transformers.BertConfig.from_pretrained(ckpt))
    ours = BertModel(BertConfig.from_json(ckpt / "config.json"))
    assert set(ours.state_dict()) == {k for k in ref.state_dict() if k != "embeddings.position_ids"}


def test_sentence_embedding_poolings(data_root, ckpt):
    ids, mask = real_batch(data_root, ckpt, n=4)
    model = BertModel.from_pretrained(ckpt).eval()
    with torch.no_grad():
        out = model(ids, mask)
        cls = model.sentence_embedding(ids, mask, pooling="cls")
        pooler = model.sentence_embedding(ids, mask, pooling="pooler")
        mean = model.sentence_embedding(ids, mask, pooling="mean")
    torch.testing.assert_close(cls, out.last_hidden_state[:, 0])
    torch.testing.assert_close(pooler, out.pooler_output)
    i = int(mask.sum(1).argmin())  # a padded row: its mean must ignore the padding
    n = int(mask[i].sum())
    torch.testing.assert_close(mean[i], out.last_hidden_state[i, :n].mean(0))


def test_padding_does_not_change_real_tokens(ckpt):
    model = BertModel.from_pretrained(ckpt).eval()
    tok = Tokenizer.from_pretrained(ckpt)
    alone = torch.tensor(tok.encode(["a short one"], 64))
    ids, mask = pad(
        tok.encode(["a short one", "a much longer sentence that forces padding on the first"], 64), tok.pad_id
    )
    with torch.no_grad():
        a = model(alone).last_hidden_state[0]
        b = model(ids, mask).last_hidden_state[0, : alone.shape[1]]
    assert (a - b).abs().max() <= TOL


def test_unpadding_falls_back_where_the_layout_cannot_say_the_mask(ckpt, monkeypatch):
    """Right padding runs unpadded; left padding (positions would not restart at 0), an unpadded batch and one with
    less padding than varlen.MIN_PADDING keep the padded computation, so the CPU path gives exactly what it gives
    without unpadding there."""
    tok = Tokenizer.from_pretrained(ckpt)
    ids, right = pad(
        tok.encode(["a short one", "a much longer sentence that forces padding on the first"], 64), tok.pad_id
    )
    left = right.flip(1)
    padding = int((right == 0).sum())
    monkeypatch.setattr(varlen, "MIN_PADDING", padding + 1)
    assert unpad_layout(right) is None
    monkeypatch.setattr(varlen, "MIN_PADDING", padding)
    assert unpad_layout(right) is not None
    assert unpad_layout(left) is None and unpad_layout(torch.ones_like(right)) is None
    assert unpad_layout(torch.zeros_like(right)) is None  # empty rows: nothing to lay out
    v, real = unpad_layout(right)
    assert real.tolist() == [right.shape[1] + t for t in range(right.shape[1])] + list(range(int(right[0].sum())))
    model = fast.install(BertModel.from_pretrained(ckpt).eval(), "cpu")
    for mask in (left, torch.ones_like(right), right):
        with torch.no_grad():
            monkeypatch.setattr(varlen, "MIN_PADDING", padding + 1)
            a = model(ids, mask).last_hidden_state
            monkeypatch.setattr(varlen, "MIN_PADDING", 10**9)
            b = model(ids, mask).last_hidden_state
        assert torch.equal(a, b)


def test_the_cpu_attention_kernels_agree_with_sdpa():
    from minbert.model.fast.cpu import attention_inference, attention_math, scores

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8, generator=g) for _ in range(3))  # (B, nh, T, hs)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).bool()[:, None, None, :]  # (B, 1, 1, T)
    fp32 = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention_math(q, k, v, mask, 0.0), fp32)
    assert torch.equal(attention_inference(q, k, v, mask, 0.0), fp32)  # fp32: SDPA itself
    # bf16: the written-out scores (rounded to bf16, as training's attention has them) with an fp32 softmax: within
    # bf16 rounding of the fp32 result, and no further from it than the bf16 softmax of training's math
    low = [t.bfloat16() for t in (q, k, v)]
    ours, math = attention_inference(*low, mask, 0.0), attention_math(*low, mask, 0.0)
    err, math_err = ((x.float() - fp32).abs().max() for x in (ours, math))
    assert ours.dtype == torch.bfloat16 and err < 0.05 and err <= math_err, (err, math_err)
    # its in-place mask and fp32-reading softmax: training's scores with their additive -inf bias, cast to fp32,
    # softmax, rounded - bit for bit
    lq, lk, lv = low
    bias = torch.zeros(mask.shape, dtype=lq.dtype).masked_fill_(~mask, float("-inf"))
    s = (lq * lq.shape[-1] ** -0.5) @ lk.transpose(-1, -2) + bias  # (B, nh, T, T)
    assert torch.equal(ours, s.float().softmax(-1).bfloat16() @ lv)
    lq.requires_grad_(True)  # a backward follows: the bias path, the same scores
    assert torch.equal(scores(lq, lk, mask), s) and torch.equal(scores(lq.detach(), lk, mask), s)


def test_dynamic_int8_quantization_runs_on_our_model(ckpt):
    """torch's quantize_dynamic replaces the Linear layers by int8 ones whose weight is a method: the fused q/k/v
    projection of the unpadded path must not read it. Padded and unpadded batches run, and the mean-pooled
    sentence embeddings stay close to fp32's (int8 is approximate: docs/SPEED.md gives its accuracy)."""
    import warnings

    from minbert.data import Tokenizer, pad
    from minbert.model import BertModel

    model = fast.install(BertModel.from_pretrained(ckpt).eval(), "cpu")
    tok = Tokenizer.from_pretrained(ckpt)
    long = "a tedious mess that never finds its footing and goes on and on for two hours and then some more"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    assert q.encoder.layer[0].attention.self.query.__class__.__name__ == "Linear" and not isinstance(
        q.encoder.layer[0].attention.self.query.weight, torch.Tensor
    )
    for texts in (
        ["a gorgeous, witty film"] * 3 + [long],
        ["a gorgeous, witty film", "a fine one"],
    ):  # unpadded, padded
        ids, mask = pad(tok.encode(texts, 64), tok.pad_id)
        with torch.inference_mode():
            a, b = model(ids, mask)[0], q(ids, mask)[0]
        m = mask[..., None].float()  # (B, T, 1)
        ea, eb = (a * m).sum(1) / m.sum(1), (b * m).sum(1) / m.sum(1)  # (B, H) mean pooling
        assert torch.nn.functional.cosine_similarity(ea, eb, dim=-1).min() > 0.9
