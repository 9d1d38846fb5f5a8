"""PALs against a hand-built Bert-n-Pals reference layer."""

import math

import torch
import torch.nn.functional as F

from minbert.model.pals import PAL, pal_size
from minbert.multitask.data import Batch
from tests.helpers import QUIET_BERT, sst_batch, tiny_model


def test_fresh_pals_reproduce_the_plain_model_exactly():
    plain, palled = tiny_model(pals=False), tiny_model(pals=True)
    palled.load_state_dict({**palled.state_dict(), **plain.state_dict()})
    plain.eval(), palled.eval()
    batch = sst_batch()
    assert torch.equal(plain.task_output("sst", batch).logits, palled.task_output("sst", batch).logits)
    with torch.no_grad():
        palled.pals["sst"].decoder.weight.normal_()
    assert not torch.allclose(plain.task_output("sst", batch).logits, palled.task_output("sst", batch).logits)
    assert torch.equal(
        plain.task_output("sts", Batch(batch.ids, batch.mask, None, None, pair=True)).score,
        palled.task_output("sts", Batch(batch.ids, batch.mask, None, None, pair=True)).score,
    )  # other task's PAL untouched


def reference_pal_layer(layer, pal, attn, x, mask):
    """Bert-n-Pals' BERTLayer.forward with mult and pals (modeling.py), written out: the PAL reads the layer input
    hidden_states, GELU(aug_dense2(attn(aug_dense(h)))) joins the second add-norm's residual."""
    n_head = attn.n_head
    ext = (1.0 - mask[:, None, None, :].float()) * -10000.0  # the reference's additive mask

    def heads(t):  # (B, T, s) -> (B, nh, T, s / nh)
        return t.view(t.shape[0], t.shape[1], n_head, -1).permute(0, 2, 1, 3)

    h = pal.encoder(x)  # aug_dense
    q, k, v = heads(attn.query(h)), heads(attn.key(h)), heads(attn.value(h))
    p = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + ext).softmax(-1)
    ctx = (p @ v).permute(0, 2, 1, 3).reshape(h.shape)  # (B, T, s)
    extra = F.gelu(pal.decoder(ctx))  # aug_dense2, then gelu
    bert_ext = (1.0 - mask[:, None, None, :].float()) * -10000.0
    a_self = layer.attention.self

    def bh(t):  # noqa: E306
        return t.view(t.shape[0], t.shape[1], a_self.n_head, -1).permute(0, 2, 1, 3)

    q, k, v = bh(a_self.query(x)), bh(a_self.key(x)), bh(a_self.value(x))
    s_ = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bert_ext).softmax(-1)
    ctx = (s_ @ v).permute(0, 2, 1, 3).reshape(x.shape)
    attention_output = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + x)
    inter = F.gelu(layer.intermediate.dense(attention_output))
    return layer.output.LayerNorm(layer.output.dense(inter) + attention_output + extra)  # BERTOutput(inter, a + extra)


def test_pal_layer_matches_bert_n_pals_reference():
    model = tiny_model(pals=True, config=QUIET_BERT).eval()
    pal = model.pals["sst"]
    with torch.no_grad():
        for p in pal.parameters():
            p.normal_(0, 0.3)  # V^D starts at zero: give every PAL weight a value
    batch = sst_batch()
    x = model.bert.embeddings(batch.ids)
    layer = model.bert.encoder.layer[0]
    with model.routing.to((("sst", None),)):  # the layer is a PALLayer: a pass for sst adds sst's PAL
        ours = layer(x, batch.mask.bool()[:, None, None, :])
    ref = reference_pal_layer(layer, pal, pal.attention[0], x, batch.mask)
    real = batch.mask.bool()
    assert torch.allclose(ours[real], ref[real], atol=1e-5)


def test_the_pal_attention_has_dropout_in_training():
    """As the reference (the projected BERTSelfAttention has the encoder's attention dropout): in train mode two
    passes differ, in eval mode they agree, and with the dropout at 0 train mode is deterministic too."""
    torch.manual_seed(0)
    x, mask = torch.randn(2, 5, 24), torch.ones(2, 1, 1, 5, dtype=torch.bool)
    for p_drop, differs in ((0.5, True), (0.0, False)):
        pal = PAL(24, 1, 12, 3, attention_dropout=p_drop)
        with torch.no_grad():
            pal.decoder.weight.normal_(0, 0.3)  # V^D starts at zero: let the attention reach the output
        adapter = lambda x, mask: pal(0, x, mask)  # noqa: E731
        pal.train()
        assert (not torch.equal(adapter(x, mask), adapter(x, mask))) == differs
        pal.eval()
        assert torch.equal(adapter(x, mask), adapter(x, mask))


def test_pal_parameter_count_matches_formula():
    for hidden, layers, size, heads in ((24, 2, 12, 3), (384, 6, 102, 6), (768, 12, 204, 6)):
        pal = PAL(hidden, layers, size, heads)
        assert (
            sum(p.numel() for p in pal.parameters())
            == PAL.parameter_count(hidden, layers, size)
            == 2 * hidden * size + hidden + size + layers * (3 * size**2 + 3 * size)
        )
    assert pal_size(768) == 204 and pal_size(384) == 102
    model = tiny_model(pals=True)
    assert sum(p.numel() for p in model.pals.parameters()) == 2 * PAL.parameter_count(24, 2, 12)
