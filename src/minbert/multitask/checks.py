"""Two invariants a run's plan must hold before its first step, whatever feature built the plan (issue 41):

- **No setting without effect.** A value set under a switch that is off (`lora.rank=4` without `lora.enabled`) is
  refused, not ignored: a sweep over it would give identical variants that claim to differ. "Set" means it differs
  from the default, so a config, an override and a sweep variant are judged alike. A head's own settings
  (`features`, `cosine_scale`) left by a base config under a head that does not read them are warned about: trying
  another head over a base config is a documented use; so is a method that compares the tasks of a step (a
  combiner, conflict statistics, GLS, FAMO) under a schedule whose steps hold one task each.
- **Something trains.** Every task the schedule can draw has parameters that train, and a combiner (or conflict
  statistics) has shared parameters whose per-task gradients it compares; otherwise a step would fail deep in
  autograd ("element 0 of tensors does not require grad"), or a task would be reported as trained on nothing.

Each violation is one MinbertError naming the settings that cause it and what to change.
"""

from __future__ import annotations

import dataclasses
import logging

from torch import nn

from minbert.errors import MinbertError
from minbert.model.heads import HEADS
from minbert.multitask.config import DistillConfig, LoraConfig, PalsConfig, TaskConfig, TrainConfig
from minbert.sampling import SAMPLERS
from minbert.weighting import WEIGHTINGS

log = logging.getLogger(__name__)

# (section, whether it is on, its defaults, the switch's own field, how to turn it on)
_SWITCHED = (
    ("lora", lambda c: c.lora.enabled, LoraConfig(), "enabled", "lora.enabled=true"),
    ("pals", lambda c: c.pals.enabled, PalsConfig(), "enabled", "pals.enabled=true"),
    ("distill", lambda c: bool(c.distill.teachers), DistillConfig(), "teachers", "distill.teachers=[RUN, ...]"),
)


def check_effective(cfg: TrainConfig) -> None:
    """Refuse a setting the resolved run would ignore. `cfg` is the config as the user gave it (before from_run
    fills in its run's tasks), so that what from_run replaces can be told apart from what the user set."""
    for section, on, defaults, switch, turn_on in _SWITCHED:
        if on(cfg):
            continue
        value = getattr(cfg, section)
        for f in dataclasses.fields(defaults):
            mine = getattr(value, f.name)
            if f.name != switch and mine != getattr(defaults, f.name):
                raise MinbertError(
                    f"{section}.{f.name}={_show(mine)} has no effect: {section} is off; set {turn_on}, "
                    f"or leave {section}.{f.name} out"
                )
    if cfg.keep_tasks and not cfg.from_run:
        raise MinbertError(
            "keep_tasks: it is filled in from from_run (the tasks of the run a task is added to); set from_run=RUN "
            "to add tasks to a finished run, or leave keep_tasks out"
        )
    default = TaskConfig()
    for name in cfg.tasks:
        t = cfg.task(name)
        given = cfg.tasks[name]
        # a head chosen over a base config's features or scale (a sweep over heads) is a documented way to set
        # them aside: warned, not refused
        if given.features != default.features and not HEADS[t.head].features:
            log.warning(
                "tasks.%s.features has no effect: only a concat or concat_sigmoid head reads them, and this task's "
                "head is %s",
                name,
                t.head,
            )
        if given.margin_direction != default.margin_direction and not given.margin_step:
            raise MinbertError(
                f"tasks.{name}.margin_direction={given.margin_direction} has no effect: the dynamic margin is off "
                f"(margin_step 0); set tasks.{name}.margin_step (e.g. 0.05), or leave margin_direction out"
            )
        if given.cosine_scale and not HEADS[t.head].similarity:
            log.warning(
                "tasks.%s.cosine_scale has no effect: only a similarity head (cosine, concat_sigmoid) scales its "
                "score, and this task's head is %s",
                name,
                t.head,
            )
    _check_together(cfg)


def _check_together(cfg: TrainConfig) -> None:
    """A method that compares the tasks of one step, under a schedule that draws one task per step, meets one task
    at a time: a combiner passes its gradient through, conflict statistics record nothing, GLS and FAMO weigh it 1
    (the plain loss; FAMO still pays its forward pass more). Warned, as a sweep over schedules is a documented use."""
    if SAMPLERS[cfg.schedule].together or len(cfg.tasks) < 2:
        return
    idle = [f"combiner={cfg.combiner}"] if cfg.combiner != "sum" else []
    idle += ["conflict_stats=true"] if cfg.conflict_stats else []
    idle += [f"weighting={cfg.weighting}"] if WEIGHTINGS[cfg.weighting].compares else []
    for key in idle:
        log.warning(
            "%s has no effect: it compares the tasks of a step, and each step of schedule=%s holds one task; use "
            "schedule=round_robin (every task in every step)",
            key,
            cfg.schedule,
        )


def check_from_run(cfg: TrainConfig, base: TrainConfig) -> None:
    """from_run keeps its run's PALs and, where the run has adapters, their settings: a different value given here
    would be silently replaced."""
    if cfg.pals != PalsConfig() and cfg.pals != base.pals:
        raise MinbertError(
            f"pals: {cfg.from_run} was trained with pals.enabled={str(base.pals.enabled).lower()}, which a task "
            "added to it keeps (its encoder is shared as it is); leave pals out of this config"
        )
    if cfg.lora.train_shared:
        raise MinbertError(
            "lora.train_shared=true: a task added to a run (from_run) leaves the shared weights as they are, or the "
            "run's own tasks would change; leave lora.train_shared out"
        )


def check_trainable(cfg: TrainConfig, model: nn.Module) -> None:
    """Before the first step: each task that trains reaches a parameter that trains, and per-task gradients have a
    shared parameter to live on. `model` is built and, for from_run, its kept parts frozen."""
    if cfg.frozen:  # the frozen mode's own checks (config.py) cover it: heads alone train there
        return
    shared = model.shared_parameters()
    if cfg.per_task_gradients and not shared:
        key = f"combiner={cfg.combiner}" if cfg.combiner != "sum" else "conflict_stats=true"
        raise MinbertError(
            f"{key}: compares the tasks' gradients on the shared encoder, but no shared weight trains "
            f"({_why_shared_fixed(cfg)}); {_fix_shared(cfg)}, or set "
            + ("combiner=sum" if cfg.combiner != "sum" else "conflict_stats=false")
        )
    if shared:
        return
    for name in cfg.tasks:
        if name in cfg.keep_tasks or model.task_parameters(name):
            continue
        t = cfg.task(name)
        fixes = [f"give tasks.{name} a head with weights (or tasks.{name}.extra_layers=1)"]
        if cfg.lora.enabled and cfg.lora.tasks and name not in cfg.lora.tasks:
            fixes.insert(0, f"add {name} to lora.tasks")
        elif not cfg.lora.enabled:
            fixes.insert(0, "set lora.enabled=true (adapters of its own)")
        raise MinbertError(
            f"tasks.{name}: nothing trains for it: its {t.head} head has no weights and no shared weight trains "
            f"({_why_shared_fixed(cfg)}); " + ", or ".join(fixes)
        )


def _why_shared_fixed(cfg: TrainConfig) -> str:
    if cfg.keep_tasks:
        return f"from_run keeps {cfg.from_run}'s encoder as it is"
    if cfg.lora.enabled and not cfg.lora.train_shared:
        return "lora.enabled=true with lora.train_shared=false keeps the encoder's own weights fixed"
    return "every encoder weight is frozen"


def _fix_shared(cfg: TrainConfig) -> str:
    if cfg.lora.enabled and not cfg.lora.train_shared and not cfg.keep_tasks:
        return "set lora.train_shared=true"
    return "let the encoder train"


def _show(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)
