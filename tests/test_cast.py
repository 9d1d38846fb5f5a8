"""The bf16 copy of the encoder that CPU inference runs (model/fast/cast.py, Runner): the heads shared, the source left
in fp32, the copy following every change of the source's weights, and the passes as close to fp32 as autocast's."""

import torch

from minbert.model.fast import onednn
from minbert.model.fast.cast import CastCopy
from minbert.multitask.runner import Runner
from minbert.optim import AdamW
from tests.helpers import sst_batch, tiny_model


def test_the_copy_casts_the_encoder_shares_the_heads_and_follows_the_weights():
    model = tiny_model(pals=True)
    cast = CastCopy(model, ("bert", "pals", "lora"), torch.bfloat16)
    copy = cast.get()
    assert cast.children == ["bert", "pals"]  # no LoRA in this model
    assert copy.heads is model.heads and copy.specs is model.specs
    assert all(p.dtype == torch.bfloat16 for p in [*copy.bert.parameters(), *copy.pals.parameters()])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the source is left as it was
    assert cast.get() is copy  # one copy

    # an optimizer step changes the source in place (the fused kernel without bumping version counters): a refresh
    # carries the new weights
    batch = sst_batch()
    model.train()
    torch.nn.functional.cross_entropy(model.task_output("sst", batch).logits, batch.labels).backward()
    AdamW(model.parameters(), lr=1e-2).step()
    assert not torch.equal(
        copy.bert.encoder.layer[0].output.dense.weight, model.bert.encoder.layer[0].output.dense.weight.bfloat16()
    )
    cast.refresh()
    assert cast.get() is copy
    for mine, theirs in zip(copy.bert.parameters(), model.bert.parameters()):
        assert torch.equal(mine, theirs.to(torch.bfloat16))
    # so does loading other weights (training's reload of the best epoch)
    other = tiny_model(pals=True, seed=1)
    model.load_state_dict(other.state_dict())
    cast.refresh()
    assert torch.equal(
        copy.bert.embeddings.word_embeddings.weight, other.bert.embeddings.word_embeddings.weight.bfloat16()
    )
    assert torch.equal(copy.pals["sst"].encoder.weight, other.pals["sst"].encoder.weight.bfloat16())


def test_a_bf16_runner_runs_the_copy_on_cpu_and_the_source_in_fp32(monkeypatch):
    monkeypatch.setattr(onednn, "faster_here", lambda: False)  # fp32 as on an Intel CPU (tests/test_onednn.py: AMD)
    model = tiny_model().eval()
    fp32, bf16 = Runner(model, 0, "cpu", "fp32"), Runner(model, 0, "cpu", "bf16")
    assert fp32.cast is None and fp32.model is model
    assert bf16.model is not model and bf16.model.bert.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    sentences = [[2, 7, 9, 11, 3], [2, 5, 3], [2, 8, 8, 4, 6, 7, 1, 3]]
    want = fp32.sentences("sst", sentences)
    got = bf16.sentences("sst", sentences)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # what autocast alone gives
        ids = torch.tensor([s + [0] * (8 - len(s)) for s in sentences])
        auto = model.embed("sst", ids, (ids != 0).long()).float()
    cos = torch.nn.functional.cosine_similarity
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert cos(got, want).min() > 0.999 and (got - want).abs().max() <= 0.02 * want.abs().max()
    assert (auto - want).abs().max() <= (got - want).abs().max()  # autocast keeps the residual stream in fp32


def test_evaluate_reads_the_weights_of_the_moment():
    """Training evaluates its live model through one Runner: in bf16 on a CPU, each evaluate() refreshes the copy,
    so what it and the passes after it compute follows the current weights."""
    model = tiny_model().eval()
    runner = Runner(model, 0, "cpu", "bf16")
    sentences = [[2, 7, 9, 11, 3], [2, 5, 3]]
    before = runner.sentences("sst", sentences)
    with torch.no_grad():
        for p in model.bert.parameters():
            p.mul_(1.5)
    assert torch.equal(runner.sentences("sst", sentences), before)  # the copy until the next evaluate
    assert runner.evaluate({}) == ({}, {})
    fresh = Runner(model, 0, "cpu", "bf16").sentences("sst", sentences)
    assert torch.equal(runner.sentences("sst", sentences), fresh) and not torch.equal(fresh, before)


def test_a_frozen_encoder_in_bf16_is_cached_from_the_copy_then_only_the_heads_run():
    from minbert.multitask.data import TaskData

    model = tiny_model()
    sentences = [[2, 7, 9, 11, 3], [2, 5, 3], [2, 8, 8, 4, 6, 7, 1, 3]]
    data = TaskData([None] * 3, torch.tensor([0, 1, 4]), sentences, [(i,) for i in range(3)])
    runner = Runner(model, 0, "cpu", "bf16", batch_size=2)
    want = runner.sentences("sst", sentences)  # the copy's rows
    runner.cache_encoder({"dev": {"sst": data}})
    assert runner.model is model and model.cache is not None  # the cache stands in for the encoder
    ids, mask = (torch.tensor(x) for x in ([[2, 5, 3, 0, 0]], [[1, 1, 1, 0, 0]]))
    assert torch.equal(model.embed("sst", ids, mask)[0], want[1])
    metrics, _ = runner.evaluate({"sst": data})
    assert 0 <= metrics["sst/acc"] <= 1
