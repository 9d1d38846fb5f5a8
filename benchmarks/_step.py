"""One training step at a time outside the training loop, for the benchmarks and checks that time or inspect a step:
the run's data, the training loop's Stepper and AdamW, each task's batch stream drawn in order."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, step_batches
from minbert.multitask.run import load_data
from minbert.multitask.techniques import Techniques
from minbert.optim import AdamW


def step_runner(cfg: TrainConfig, model, tok, device: torch.device) -> Callable[[int], None]:
    """step(i): training step i of `model` (already on `device`, in training mode after this call) on the next
    batch of every task of `cfg`."""
    data = load_data(cfg, tok, ("train",))["train"]
    tech = Techniques(cfg, model, device)
    opt = AdamW(model.param_groups(cfg.lr, cfg.head_lr_mult, cfg.layer_lr_decay), lr=cfg.lr)
    streams = {n: BatchStream(n, d.lengths, cfg.task(n).batch_size, cfg.seed) for n, d in data.items()}
    model.train()

    def step(i: int) -> None:
        tech.stepper.step(opt, step_batches(data, {n: streams[n].next() for n in cfg.tasks}, tok.pad_id, device), i)

    return step
