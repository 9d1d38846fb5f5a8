"""Learning-rate schedules by hand."""

import pytest
import torch

from minbert.lr_schedules import LR_SCHEDULES


def optimizer_at(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_plateau_halves_after_three_rising_epochs():
    opt, sched = optimizer_at(), LR_SCHEDULES["plateau"]()
    lrs = []
    for epoch, loss in enumerate([5, 6, 7, 8, 7, 8, 9, 10, 11], start=1):
        sched.on_epoch_end(opt, epoch, loss, {})
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_warmup_linear():
    opt, sched = optimizer_at(2.0), LR_SCHEDULES["warmup_linear"](warmup=0.2)
    lrs = []
    for step in range(10):
        sched.on_step(opt, step, 10)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 2.0, 2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25])
