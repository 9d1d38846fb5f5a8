"""A task added to a trained run without touching the others: `from_run: RUN` in a config whose `tasks` name the new
task(s) (built-in or from `custom_tasks`).

The run is RUN's model - its encoder, its tasks' heads and adapters, as its best checkpoint has them - with a fresh
head (and, with `lora`, fresh adapters) for each new task. Only those train: everything RUN's tasks use keeps
`requires_grad` off, training batches come from the new tasks alone, and each epoch still evaluates every task, so
the new run's folder is a whole model whose old tasks predict exactly what RUN's did (their prediction files
byte-identical). The resolved config lists RUN's tasks with RUN's settings and names them in `keep_tasks`; it is all
a resumed or loaded run needs (its checkpoints hold every weight).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from minbert.errors import MinbertError
from minbert.multitask.config import TrainConfig


def extended(cfg: TrainConfig) -> TrainConfig:
    """The config of a run that adds `cfg.tasks` to `cfg.from_run`; `cfg` itself when it adds to no run, or when
    it is already resolved (a resumed run's)."""
    if not cfg.from_run or cfg.keep_tasks:
        return cfg
    from minbert.multitask.checks import check_from_run
    from minbert.multitask.run import load_run_config

    try:
        base = load_run_config(Path(cfg.from_run))
    except MinbertError as e:
        raise MinbertError(f"from_run: {e}") from None
    if not (Path(cfg.from_run) / "best.json").is_file():
        raise MinbertError(f"from_run: {cfg.from_run} has no best checkpoint yet; let it finish, or --resume it first")
    check_from_run(cfg, base)
    again = [t for t in cfg.tasks if t in base.tasks]
    if again:
        raise MinbertError(
            f"tasks.{again[0]}: {cfg.from_run} was trained on it already; from_run adds new tasks (its own are kept)"
        )
    if cfg.checkpoint != base.checkpoint:
        raise MinbertError(
            f"checkpoint: {cfg.checkpoint!r}, but {cfg.from_run} was trained from {base.checkpoint!r}; a task added "
            "to it shares its encoder"
        )
    lora = cfg.lora
    if base.lora.enabled:  # the run's adapter settings, extended to the new tasks that have adapters
        same = ("rank", "alpha", "dropout", "targets")
        if lora.enabled and any(getattr(lora, k) != getattr(base.lora, k) for k in same):
            raise MinbertError(
                f"lora: {cfg.from_run}'s adapters have rank {base.lora.rank}, alpha {base.lora.alpha:g}, dropout "
                f"{base.lora.dropout:g}, targets {list(base.lora.targets)}; a task added to it gets the same"
            )
        new = tuple(cfg.lora.tasks or cfg.tasks) if lora.enabled else ()
        lora = dataclasses.replace(base.lora, tasks=tuple(base.lora.tasks or base.tasks) + new, lr_mult=lora.lr_mult)
    elif lora.enabled:
        lora = dataclasses.replace(lora, tasks=tuple(lora.tasks or cfg.tasks))
    return dataclasses.replace(
        cfg,
        tasks={**base.tasks, **cfg.tasks},
        custom_tasks={**base.custom_tasks, **cfg.custom_tasks},
        pals=base.pals,
        lora=lora,
        keep_tasks=tuple(base.tasks),
    )


def new_task_prefixes(cfg: TrainConfig) -> tuple[str, ...]:
    """The parameter names the new tasks own - their heads, adapters and PALs - which the run's checkpoint lacks."""
    new = [t for t in cfg.tasks if t not in cfg.keep_tasks]
    return tuple(f"{part}.{t}." for part in ("heads", "lora", "pals") for t in new)


def freeze_kept(model: nn.Module, cfg: TrainConfig) -> None:
    """Only what the new tasks own trains."""
    own = new_task_prefixes(cfg)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(own))
