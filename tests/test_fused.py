"""The fused multitask forward (all tasks' sentences packed into one encoder pass) against one pass per task."""

import dataclasses

import pytest
import torch

from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, step_batches
from minbert.multitask.packing import pack
from minbert.multitask.techniques import Techniques
from minbert.multitask.train import build, load_data
from tests.test_multitask import QUICKSTART, TINY


def setup(overrides):
    cfg = load_config(TrainConfig, QUICKSTART, TINY + ["encoder_dropout=0"] + overrides).validate()
    cfg = dataclasses.replace(cfg, tasks={n: dataclasses.replace(t, dropout=0.0) for n, t in cfg.tasks.items()})
    torch.manual_seed(0)
    model, tok = build(cfg, torch.device("cpu"))
    data = load_data(cfg, tok, splits=("train",))["train"]
    streams = {n: BatchStream(n, d.lengths, cfg.task(n).batch_size, cfg.seed) for n, d in data.items()}
    (batches, _), = step_batches(data, {n: s.next() for n, s in streams.items()}, tok.pad_id, "cpu")
    return cfg, model, batches


def losses_and_grads(cfg, model, batches, fused):
    tech = Techniques(dataclasses.replace(cfg, fused=fused), model, torch.device("cpu"))
    model.zero_grad(set_to_none=True)
    losses = tech.batch_losses(batches)
    sum(losses.values()).backward()
    return {n: v.item() for n, v in losses.items()}, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("heads", [
    [],  # quickstart: SST linear, Quora concat bi-encoder, STS cosine bi-encoder; mean pooling
    ["tasks.quora.head=cross", "tasks.sst.pooling=pooler", "tasks.sts.pooling=cls"],
])
def test_fused_step_has_the_per_task_loss_and_gradient_in_fp32(heads):
    cfg, model, batches = setup(heads)
    model.train()
    fused, g_fused = losses_and_grads(cfg, model, batches, fused=True)
    sep, g_sep = losses_and_grads(cfg, model, batches, fused=False)
    assert fused.keys() == sep.keys() == {"sst", "quora", "sts"}
    for n in fused:
        assert abs(fused[n] - sep[n]) <= 1e-5, (n, fused[n], sep[n])
    assert g_fused.keys() == g_sep.keys()
    for n, g in g_sep.items():
        assert (g_fused[n] - g).abs().max() <= 1e-5 * max(1.0, g.abs().max().item()), n


def test_packing_places_every_token_once_and_pads_little():
    _, _, batches = setup([f"tasks.{t}.max_length=128" for t in ("sst", "quora", "sts")])
    p = pack(batches)
    real = sum(int(b.mask.sum()) for b in batches.values())
    assert int((p.ids != 0).sum()) == real  # [PAD] is id 0 and never a real token here
    R, T = p.ids.shape
    assert R * T <= 1.2 * real  # first fit, longest first, leaves little room in the rows
    padded = sum(b.ids.numel() for b in batches.values())
    assert R * T < padded  # less than padding each task's batch on its own
    # each packed token sees exactly its own sentence
    seen = p.mask.sum(-1)  # (R, T)
    for s, (length, flat) in enumerate(zip(p.lengths.tolist(), p.gather)):
        r, c = divmod(int(flat[0]), T)
        assert (seen[r, c : c + length] == length).all() and p.positions[r, c : c + length].tolist() == list(range(length))
