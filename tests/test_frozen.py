"""`frozen: true` as a cached encoder (multitask/frozen.py): rows computed once in eval mode, then only looked up."""

import torch

from minbert.multitask.data import TaskData, make_batch
from minbert.multitask.runner import Runner
from tests.helpers import tiny_model


def _data(n=6, seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    sentences = [torch.randint(1, 50, (int(k),), generator=g).tolist() for k in torch.randint(3, 9, (n,), generator=g)]
    return TaskData([None] * n, torch.arange(n) % 5, sentences, [(i,) for i in range(n)])


def test_the_cache_gives_the_eval_mode_encoder_rows_and_never_runs_the_encoder_again():
    model = tiny_model()
    train, dev = _data(seed=0), _data(seed=1)
    runner = Runner(model, 0, "cpu", "fp32", batch_size=4)
    with torch.no_grad():
        expected = runner.sentences("sst", train.sentences)  # (6, H), eval mode: no dropout
    runner.cache_encoder({"train": {"sst": train}, "dev": {"sst": dev}})
    calls = []
    model.encode = lambda *a, **k: calls.append(a) or torch.zeros(len(a[1]), 24)  # noqa: E731
    model.cache.encode = model.encode
    model.train()  # dropout on: a real encoder pass would differ from the eval-mode rows
    batch = make_batch(train, [4, 0, 2], pad_id=0)  # padded to the longest of the three
    got = model.embed("sst", batch.ids, batch.mask)
    assert torch.equal(got, expected[[4, 0, 2]]) and not calls
    out = model.task_output("sst", batch)  # the head reads the cached rows; its gradient flows into the head only
    out.logits.sum().backward()
    assert model.heads["sst"].out.weight.grad is not None
    assert all(p.grad is None for p in model.bert.parameters())
    assert torch.equal(runner.sentences("sst", dev.sentences), runner.sentences("sst", dev.sentences)) and not calls


def test_an_input_missing_from_the_cache_is_encoded_once_in_eval_mode():
    model = tiny_model()
    runner = Runner(model, 0, "cpu", "fp32", batch_size=4)
    runner.cache_encoder({"train": {"sst": _data()}})
    new = _data(n=2, seed=7)
    model.train()
    batch = make_batch(new, [0, 1], pad_id=0)
    first = model.embed("sst", batch.ids, batch.mask)
    assert model.training and model.bert.training  # its mode is given back
    again = model.embed("sst", batch.ids, batch.mask)
    assert torch.equal(first, again) and len(model.cache.rows) == 8
    model.eval()
    with torch.no_grad():
        assert torch.allclose(first, model.encode("sst", batch.ids, batch.mask), atol=1e-6)
