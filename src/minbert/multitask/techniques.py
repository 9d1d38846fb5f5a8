"""The techniques a config switches on, built once from their registries so the training loop names none of them,
in four roles: which tasks each step trains (the task sampler), what a step minimizes (`Objective`: task losses,
extra losses, distillation, regularizers), how a step updates the weights (`Stepper`: gradient scaler, DDP, combiner,
conflict statistics), and what changes between steps and epochs (the updaters: the learning-rate schedule, dynamic
margins). Every member is made by `registry.build`; their state goes through checkpoints with the rest of the run."""

from __future__ import annotations

from minbert.lr_schedules import UPDATERS
from minbert.multitask.config import TrainConfig
from minbert.multitask.objective import Objective
from minbert.multitask.stepper import Stepper
from minbert.registry import build
from minbert.sampling import SAMPLERS


class Techniques:
    def __init__(self, cfg: TrainConfig, model, device):
        self.cfg, self.model = cfg, model
        self.objective = Objective(cfg, model, device)
        self.stepper = Stepper(self.objective, device)
        # `sampler(sizes, batches, epoch, epochs, steps, seed) -> plan`: the tasks of each step of an epoch
        self.sampler = build(SAMPLERS, cfg.schedule, cfg.schedule_args)
        self.lr_schedule = build(UPDATERS, cfg.lr_schedule, cfg.lr_schedule_args)
        # each task's dynamic margin, bound to the task's loss and moved by its dev metric
        steps = {n: cfg.task(n).margin_step for n in cfg.tasks}
        metrics = {n: f"{n}/{cfg.specs[n].metric_name}" for n in cfg.tasks}
        self.margins = {
            n: build(
                UPDATERS,
                "dynamic_margin",
                {"step": step, "direction": cfg.task(n).margin_direction},
                self.objective.losses[n],
                n,
                metrics[n],
            )
            for n, step in steps.items()
            if step
        }
        self.updaters = [self.lr_schedule, *self.margins.values()]  # each hook runs them in this order

    def start_step(self, optimizer, step: int, total_steps: int) -> None:
        """Before each optimizer step: the updaters' `on_step` (a learning-rate schedule's rate for the step)."""
        for updater in self.updaters:
            updater.on_step(optimizer, step, total_steps)

    def end_epoch(self, optimizer, epoch: int, train_loss: float, dev: dict[str, float]) -> dict:
        """Epoch-end updates (LR schedule, dynamic margins, conflict statistics); returns what to log."""
        record = {}
        for updater in self.updaters:
            record.update(updater.on_epoch_end(optimizer, epoch, train_loss, dev))
        # the pooler's group runs at the configured rate times the schedule; with a frozen encoder, the heads' group
        pooler = self.model.bert.pooler.dense.weight
        groups = [g for g in optimizer.param_groups if any(p is pooler for p in g["params"])] or optimizer.param_groups
        record["lr"] = groups[0]["lr"]
        return record | self.stepper.end_epoch()

    def state(self) -> dict:
        return {
            **self.stepper.state(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "margins": {n: m.state_dict() for n, m in self.margins.items()},
        }

    def load_state(self, state: dict) -> None:
        self.stepper.load_state(state)
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        for n, m in state["margins"].items():
            if not isinstance(m, dict):  # saved before margins were updaters: the margin, and the metric apart
                m = {"margin": m, "previous": state["margin_prev"][n]}
            self.margins[n].load_state_dict(m)
