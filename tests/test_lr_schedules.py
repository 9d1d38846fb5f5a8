"""Updaters by hand: the learning-rate schedules, and the dynamic margin (report 004, Algorithm 1)."""

import pytest
import torch

from minbert.losses import LOSSES
from minbert.lr_schedules import UPDATERS
from minbert.lr_schedules.dynamic_margin import DynamicMargin, next_margin
from minbert.registry import build


def optimizer_at(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_plateau_halves_after_three_rising_epochs():
    opt, sched = optimizer_at(), UPDATERS["plateau"]()
    lrs = []
    for epoch, loss in enumerate([5, 6, 7, 8, 7, 8, 9, 10, 11], start=1):
        sched.on_epoch_end(opt, epoch, loss, {})
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_warmup_linear():
    opt, sched = optimizer_at(2.0), UPDATERS["warmup_linear"](warmup=0.2)
    lrs = []
    for step in range(10):
        sched.on_step(opt, step, 10)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 2.0, 2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25])


def test_dynamic_margin_reproduces_algorithm_1():
    # Algorithm 1 on a scripted sequence of dev scores, initial margin 0.5, step 0.1
    scores = [0.40, 0.45, 0.44, 0.44, 0.50]
    margin, previous, seen = 0.5, 0.0, []
    for epoch, current in enumerate(scores, start=1):
        margin = next_margin(margin, previous, current, epoch, 0.1)
        previous = current
        seen.append(round(margin, 10))
    # improved, improved, worse, equal (not an improvement), improved
    expected = [0.5 - 0.1, 0.4 - 0.1 / 2, 0.35 + 0.1 / 3, 0.35 + 0.1 / 3 + 0.1 / 4, 0.35 + 0.1 / 3 + 0.1 / 4 - 0.1 / 5]
    assert seen == [round(x, 10) for x in expected]
    # the same as an end-of-epoch updater moving a cosine-embedding loss's margin, and through a checkpoint
    loss = LOSSES["cosine_embedding"](margin=0.5)
    updater = build(UPDATERS, "dynamic_margin", {"step": 0.1}, loss, "sts", "sts/pearson")
    logged = [updater.on_epoch_end(None, e, 0.0, {"sts/pearson": c})["margin/sts"] for e, c in enumerate(scores[:3], 1)]
    again = DynamicMargin(LOSSES["cosine_embedding"](), "sts", "sts/pearson", 0.1)
    again.load_state_dict(updater.state_dict())
    logged += [again.on_epoch_end(None, e, 0.0, {"sts/pearson": c})["margin/sts"] for e, c in [(4, 0.44), (5, 0.50)]]
    assert [round(x, 10) for x in logged] == seen and loss.margin == pytest.approx(expected[2])
