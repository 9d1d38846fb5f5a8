"""The techniques a config switches on, assembled from their registries so the training loop names none of them:
task losses (plus extra losses), regularizers, the gradient combiner, the learning-rate schedule, dynamic margins.
Their state goes through checkpoints with the rest of the run."""

from __future__ import annotations

import random

import torch

from minbert.combiners import COMBINERS
from minbert.combiners.conflicts import ConflictStats
from minbert.losses import LOSSES
from minbert.losses.dynamic_margin import next_margin
from minbert.lr_schedules import LR_SCHEDULES
from minbert.multitask.config import TrainConfig
from minbert.regularizers import REGULARIZERS
from minbert.runs import autocast
from minbert.tasks import TASKS


class Techniques:
    def __init__(self, cfg: TrainConfig, model, device):
        self.cfg, self.model, self.device = cfg, model, device
        self.tasks = {n: cfg.task(n) for n in cfg.tasks}
        self.losses = {n: LOSSES[t.loss](**t.loss_args) for n, t in self.tasks.items()}
        self.needs = {n: LOSSES[t.loss].needs for n, t in self.tasks.items()}
        self.extra = {
            n: [(LOSSES[k](**{a: v for a, v in args.items() if a != "weight"}), args.get("weight", 1.0)) for k, args in t.extra_losses.items()]
            for n, t in self.tasks.items()
        }
        self.regularizers = {k: REGULARIZERS[k](**args) for k, args in cfg.regularizers.items()}
        self.combiner = COMBINERS[cfg.combiner](**cfg.combiner_args)
        self.lr_schedule = LR_SCHEDULES[cfg.lr_schedule](**cfg.lr_schedule_args)
        self.conflicts = ConflictStats()
        # per-task gradients are only materialized when something needs them; plain summing just accumulates
        self.per_task = cfg.combiner != "sum" or cfg.conflict_stats
        self.shared = model.shared_parameters()
        self.margin_prev = {n: 0.0 for n, t in self.tasks.items() if t.margin_step}

    def task_loss(self, name: str, batch) -> torch.Tensor:
        """The weighted loss of one task's batch: its loss, extra losses and regularizer terms."""
        with autocast(self.device, self.cfg.bf16):
            out = self.model(name, batch)
            loss = self.losses[name](out, batch.labels)
            for fn, w in self.extra[name]:
                loss = loss + w * fn(out, batch.labels)
            for reg in self.regularizers.values():
                loss = loss + reg(self.model, name, batch, out, self.needs[name])
        return loss * self.tasks[name].weight

    def train_step(self, optimizer, batches: dict, step: int) -> dict[str, float]:
        """One optimizer step over one batch of each scheduled task; returns each task's weighted loss."""
        optimizer.zero_grad(set_to_none=True)
        rows, losses = [], {}
        for name, batch in batches.items():
            loss = self.task_loss(name, batch)
            loss.backward()  # one task's graph at a time; accumulated, the gradients are those of the summed loss
            if self.per_task:
                rows.append(self.take_grads())  # this task's gradient on the shared encoder, for the combiner
            losses[name] = loss.item()
        if rows:
            self.combine(rows, list(batches), step)
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        optimizer.step()
        self.after_step()
        return losses

    def take_grads(self) -> torch.Tensor:
        """Move the shared parameters' gradient into one flat row (and clear it for the next task)."""
        row = torch.cat([p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in self.shared])
        for p in self.shared:
            p.grad = None
        return row

    def combine(self, rows: list[torch.Tensor], names: list[str], step: int) -> None:
        """G (T, P) -> one gradient on the shared parameters; records conflicts when asked."""
        grads = torch.stack(rows)
        if self.cfg.conflict_stats and len(rows) > 1:
            self.conflicts.update(grads, names)
        flat = self.combiner(grads, random.Random(f"{self.cfg.seed}/{step}")) if len(rows) > 1 else grads[0]
        offset = 0
        for p in self.shared:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def after_step(self) -> None:
        for reg in self.regularizers.values():
            reg.after_step(self.model)

    def end_epoch(self, optimizer, epoch: int, train_loss: float, dev: dict[str, float]) -> dict:
        """Epoch-end updates (LR schedule, dynamic margins); returns what to log."""
        self.lr_schedule.on_epoch_end(optimizer, epoch, train_loss)
        record = {"lr": optimizer.param_groups[0]["lr"]}
        for n, prev in self.margin_prev.items():
            current = dev[f"{n}/{TASKS[n].metric_name}"]
            self.losses[n].margin = next_margin(self.losses[n].margin, prev, current, epoch, self.tasks[n].margin_step)
            self.margin_prev[n] = current
            record[f"margin/{n}"] = self.losses[n].margin
        if self.cfg.conflict_stats:
            record.update(self.conflicts.summary())
            self.conflicts.reset()
        if hasattr(self.combiner, "applied"):
            record["combiner/applied"] = self.combiner.applied
        return record

    def state(self) -> dict:
        return {
            "combiner": self.combiner.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "conflicts": self.conflicts.state_dict(),
            "margins": {n: self.losses[n].margin for n in self.margin_prev},
            "margin_prev": self.margin_prev,
        }

    def load_state(self, state: dict) -> None:
        self.combiner.load_state_dict(state["combiner"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.conflicts.load_state_dict(state["conflicts"])
        for n, m in state["margins"].items():
            self.losses[n].margin = m
        self.margin_prev = dict(state["margin_prev"])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{k}/{t}": v for k, reg in self.regularizers.items() for t, v in reg.state_tensors().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, reg in self.regularizers.items():
            mine = {t.removeprefix(f"{k}/"): v for t, v in tensors.items() if t.startswith(f"{k}/")}
            reg.load_state_tensors(mine, self.model)
