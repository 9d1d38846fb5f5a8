"""Updaters by hand: the learning-rate schedules, and the dynamic margin (report 004, Algorithm 1)."""

import pytest
import torch

from minbert.config import load_config
from minbert.errors import MinbertError
from minbert.losses import LOSSES
from minbert.lr_schedules import UPDATERS
from minbert.lr_schedules.dynamic_margin import DynamicMargin, next_margin
from minbert.multitask.checks import check_effective
from minbert.multitask.config import TaskConfig, TrainConfig
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


def test_dynamic_margin_direction_by_hand():
    # report 004 tested which way the margin moves; initial margin 0.25, step 0.2, dev values by epoch:
    # 0.30 (improved over the initial 0), 0.28 (worse), 0.28 (equal: not improved), 0.35 (improved)
    scores = [0.30, 0.28, 0.28, 0.35]
    hand = {
        # improved -> lower: 0.25 - 0.2 = 0.05; worse -> raise 0.2/2: 0.15; equal -> raise 0.2/3: 0.2166...;
        # improved -> lower 0.2/4: 0.1666...
        "algorithm1": [0.05, 0.15, 0.15 + 0.2 / 3, 0.15 + 0.2 / 3 - 0.05],
        # the opposite signs: 0.45, 0.35, 0.2833..., 0.3333...
        "reverse": [0.45, 0.35, 0.35 - 0.2 / 3, 0.35 - 0.2 / 3 + 0.05],
    }
    for direction, expected in hand.items():
        margin, previous, seen = 0.25, 0.0, []
        for epoch, current in enumerate(scores, start=1):
            margin = next_margin(margin, previous, current, epoch, 0.2, direction)
            previous = current
            seen.append(margin)
        assert seen == pytest.approx(expected), direction
        # the updater built as the training loop builds it, from the task's config values
        loss = LOSSES["cosine_embedding"](margin=0.25)
        updater = build(UPDATERS, "dynamic_margin", {"step": 0.2, "direction": direction}, loss, "sts", "sts/pearson")
        logged = [updater.on_epoch_end(None, e, 0.0, {"sts/pearson": c})["margin/sts"] for e, c in enumerate(scores, 1)]
        assert logged == pytest.approx(expected) and loss.margin == pytest.approx(expected[-1])
    assert hand["algorithm1"] == pytest.approx([0.05, 0.15, 0.2166666667, 0.1666666667])
    assert hand["reverse"] == pytest.approx([0.45, 0.35, 0.2833333333, 0.3333333333])
    # the default is Algorithm 1 as printed
    assert next_margin(0.25, 0.0, 0.3, 1, 0.2) == pytest.approx(0.05)
    with pytest.raises(MinbertError, match="direction"):
        build(UPDATERS, "dynamic_margin", {"step": 0.2, "direction": "up"}, LOSSES["cosine_embedding"](), "sts", "m")


def test_margin_direction_is_a_task_setting_refused_without_a_dynamic_margin():
    def cfg(**sts):
        return TrainConfig(tasks={"sts": TaskConfig(loss="cosine_embedding", **sts)}).validate()

    check_effective(cfg(margin_step=0.05, margin_direction="reverse"))  # in effect
    check_effective(cfg(margin_step=0.05))  # the default direction, algorithm1
    with pytest.raises(MinbertError, match=r"tasks\.sts\.margin_direction=reverse has no effect.*margin_step"):
        check_effective(cfg(margin_direction="reverse"))
    with pytest.raises(MinbertError, match="margin_direction"):
        load_config(TrainConfig, None, ["tasks.sts.margin_direction=sideways"])


def test_margin_direction_reaches_the_updater_the_training_loop_builds():
    from minbert.multitask.run import build as build_model
    from minbert.multitask.techniques import Techniques

    for direction, after in (("algorithm1", -0.05), ("reverse", 0.05)):
        sts = TaskConfig(loss="cosine_embedding", margin_step=0.05, margin_direction=direction)
        cfg = TrainConfig(tasks={"sts": sts}).validate()
        model, _ = build_model(cfg, torch.device("cpu"))
        margin = Techniques(cfg, model, torch.device("cpu")).margins["sts"]
        assert margin.direction == direction and margin.loss.margin == 0.0
        assert margin.on_epoch_end(None, 1, 0.0, {"sts/pearson": 0.5}) == {"margin/sts": pytest.approx(after)}
