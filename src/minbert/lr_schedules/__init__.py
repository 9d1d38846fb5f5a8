"""Updaters: what moves a training setting between steps and epochs, the learning-rate schedules (the config's
`lr_schedule`, its settings `lr_schedule_args`) and each task's dynamic margin (`tasks.<task>.margin_step`).
`on_step(optimizer, step, total_steps)` before each optimizer step, `on_epoch_end(optimizer, epoch, train_loss, dev)
-> what to log` after each evaluation, `state_dict()` / `load_state_dict()` for resume. Each is an `Updater`
(lr_schedules/base.py), built with `registry.build(UPDATERS, name, args)`."""

from __future__ import annotations

from minbert.lr_schedules.base import Updater
from minbert.lr_schedules.constant import Constant
from minbert.lr_schedules.dynamic_margin import DynamicMargin
from minbert.lr_schedules.plateau import Plateau
from minbert.lr_schedules.warmup_linear import WarmupLinear

UPDATERS: dict[str, type[Updater]] = {
    "constant": Constant,
    "plateau": Plateau,
    "warmup_linear": WarmupLinear,
    "dynamic_margin": DynamicMargin,
}
