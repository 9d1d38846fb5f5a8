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


def load_encoder(run: Path, model: nn.Module, cfg: TrainConfig) -> None:
    """init_from: RUN's encoder as RUN ended (its last checkpoint: what a pipeline's stage hands on, also where the
    stage's own dev metric means little, as report 001's sentiment-MNRL stage) becomes this run's starting point;
    RUN's heads are not taken (this run's tasks get fresh ones) and every weight trains. Problems are named as the
    key."""
    from minbert.multitask.run import load_run_config
    from minbert.multitask.state import snapshot_folder
    from minbert.runs import load_tensors

    where = f"init_from: {run}"
    try:
        base = load_run_config(run)
    except MinbertError as e:
        raise MinbertError(f"{where}: {e}; name a run `minbert train` made") from None
    if base.checkpoint != cfg.checkpoint:
        raise MinbertError(
            f"{where}: was trained from checkpoint {base.checkpoint!r}, this run starts from {cfg.checkpoint!r}; "
            "give both the same checkpoint"
        )
    if base.lora.enabled or base.pals.enabled:
        raise MinbertError(
            f"{where}: has {'LoRA adapters' if base.lora.enabled else 'PALs'}, which are part of its encoder's "
            "output; start from a run without them, or add tasks to it with from_run"
        )
    if not (run / "summary.json").is_file():
        raise MinbertError(f"{where}: has not finished; let it finish (minbert train --resume {run}) first")
    try:
        weights = load_tensors(snapshot_folder(run, "last") / "model.safetensors")
    except MinbertError as e:
        raise MinbertError(f"{where}: {e}") from None
    encoder = {k.removeprefix("bert."): v for k, v in weights.items() if k.startswith("bert.")}
    found = model.bert.load_state_dict(encoder, strict=False)
    if found.missing_keys or found.unexpected_keys:
        keys = ", ".join((found.missing_keys + found.unexpected_keys)[:3])
        raise MinbertError(f"{where}: its encoder does not fit this model ({keys}); was its config.yaml edited?")
