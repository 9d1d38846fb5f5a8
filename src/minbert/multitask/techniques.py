"""The techniques a config switches on, assembled from their registries so the training loop names none of them:
task losses (plus extra losses), regularizers, the gradient combiner, the learning-rate schedule, dynamic margins,
and how a step runs (fused or per-task passes, micro-batches, fp16 loss scaling, data parallel gradients).
Their state goes through checkpoints with the rest of the run."""

from __future__ import annotations

import contextlib
import logging
import random

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from minbert.combiners import COMBINERS
from minbert.combiners.conflicts import ConflictStats
from minbert.distributed import all_reduce_sum, broadcast_tensors, current
from minbert.losses import LOSSES
from minbert.losses.dynamic_margin import next_margin
from minbert.lr_schedules import LR_SCHEDULES
from minbert.multitask.config import TrainConfig
from minbert.multitask.fused import fused_forward
from minbert.regularizers import REGULARIZERS
from minbert.runs import autocast
from minbert.tasks import TASKS

# losses whose terms compare examples within a batch: splitting the batch changes them
IN_BATCH_LOSSES = ("mnrl", "mnrl_sentiment", "triplet")
log = logging.getLogger(__name__)


def flat_grads(grads, params) -> torch.Tensor:
    """One flat row from per-parameter gradients, zeros where a parameter got none."""
    return torch.cat([g.reshape(-1) if g is not None else p.new_zeros(p.numel()) for g, p in zip(grads, params)])


def set_grads(flat: torch.Tensor, params) -> None:
    """A flat row back into the parameters' .grad."""
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p).clone()


class StepLoss(nn.Module):
    """A micro-batch's summed loss as one module call, so DistributedDataParallel can wrap it: one forward (fused
    or per task), one backward, gradients averaged across processes during that backward."""

    def __init__(self, model: nn.Module, losses):
        super().__init__()
        self.model = model  # registered, so DDP sees (and first broadcasts) its parameters
        self.losses = losses

    def forward(self, batches: dict, fracs: dict[str, float]):
        losses = self.losses(batches)
        return sum(fracs[n] * loss for n, loss in losses.items()), losses


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
        # PALs put a different adapter in every layer per task, so their tasks cannot share one encoder pass
        self.fused = cfg.fused and not self.per_task and model.pals is None
        self.shared = model.shared_parameters()
        self.own = {n: [p for m in (model.heads[n], model.pals[n] if model.pals is not None else None) if m is not None
                        for p in m.parameters() if p.requires_grad] for n in self.tasks}
        self.margin_prev = {n: 0.0 for n, t in self.tasks.items() if t.margin_step}
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.world = current().world
        in_batch = sorted({k for t in self.tasks.values() for k in (t.loss, *t.extra_losses) if k in IN_BATCH_LOSSES})
        if in_batch and (self.world > 1 or cfg.grad_accum > 1):
            log.warning("%s draw negatives from within a batch: with grad_accum %d on %d processes each sees 1/%d of "
                        "the batch, so results differ from one large batch", ", ".join(in_batch), cfg.grad_accum,
                        self.world, cfg.grad_accum * self.world)
        self.step_loss = StepLoss(model, self.batch_losses)
        self.ddp = None
        if self.world > 1 and self.per_task:
            broadcast_tensors(model.state_dict().values())  # rows are all-reduced by hand (task_grads): sync weights once
        elif self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            # find_unused_parameters: heads of tasks not in a step, and the pooler under mean pooling, get no gradient
            self.ddp = DistributedDataParallel(self.step_loss, device_ids=ids, find_unused_parameters=True)

    def task_loss(self, name: str, batch, out: dict | None = None) -> torch.Tensor:
        """The weighted loss of one task's batch: its loss, extra losses and regularizer terms. `out`: the head
        output when a fused pass has computed it already."""
        with autocast(self.device, self.cfg.precision):
            out = self.model(name, batch) if out is None else out
            loss = self.losses[name](out, batch.labels)
            for fn, w in self.extra[name]:
                loss = loss + w * fn(out, batch.labels)
            for reg in self.regularizers.values():
                loss = loss + reg(self.model, name, batch, out, self.needs[name])
        return loss * self.tasks[name].weight

    def batch_losses(self, batches: dict) -> dict[str, torch.Tensor]:
        outs = {}
        if self.fused and len(batches) > 1:
            with autocast(self.device, self.cfg.precision):
                outs = fused_forward(self.model, batches)
        return {n: self.task_loss(n, b, outs.get(n)) for n, b in batches.items()}

    def train_step(self, optimizer, micro: list[tuple[dict, dict]], step: int) -> dict[str, float]:
        """One optimizer step. `micro`: this process's micro-batches, each {task: Batch} with {task: its share of
        the task's global batch}; returns each task's weighted loss on the global batch."""
        optimizer.zero_grad(set_to_none=True)
        totals = {n: 0.0 for n in micro[0][0]}
        if self.per_task:
            self.combine(self.task_grads(micro, totals), list(totals), step)
        else:
            for i, (batches, fracs) in enumerate(micro):
                sync = self.ddp is None or i == len(micro) - 1  # average across processes once, after the last
                with contextlib.nullcontext() if sync else self.ddp.no_sync():
                    total, losses = (self.ddp or self.step_loss)(batches, fracs)
                    self.scale(total * self.world).backward()  # DDP averages over processes; the shares already sum to 1
                for n, loss in losses.items():
                    totals[n] += fracs[n] * loss.item()
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)  # clipping and AdamW see true gradients; inf/nan skips the step
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        self.after_step()
        reduced = all_reduce_sum(torch.tensor(list(totals.values()), dtype=torch.float64))
        return dict(zip(totals, reduced.tolist()))

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.scaler is None else self.scaler.scale(loss)

    def task_grads(self, micro, totals: dict[str, float]) -> list[torch.Tensor]:
        """Per-task gradient rows on the shared parameters, summed over micro-batches and processes (one pass per
        task; `torch.autograd.grad` hands back the shared parameters' gradient without touching .grad). The task's
        own parameters (head, PALs) get their gradient in .grad, also summed across processes."""
        rows = {}
        for batches, fracs in micro:
            for n, b in batches.items():
                loss = self.task_loss(n, b) * fracs[n]
                grads = torch.autograd.grad(self.scale(loss), self.shared + self.own[n], allow_unused=True)
                k = len(self.shared)
                flat = flat_grads(grads[:k], self.shared)
                rows[n] = flat if n not in rows else rows[n] + flat
                for p, g in zip(self.own[n], grads[k:]):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad + g
                totals[n] += loss.item()
        if self.world > 1:
            own = [p for n in rows for p in self.own[n]]
            set_grads(all_reduce_sum(flat_grads([p.grad for p in own], own)), own)
        rows = [rows[n] for n in totals]
        return [all_reduce_sum(r) for r in rows]

    def combine(self, rows: list[torch.Tensor], names: list[str], step: int) -> None:
        """G (T, P) -> one gradient on the shared parameters; records conflicts when asked."""
        grads = torch.stack(rows)
        if self.scaler is not None and not bool(torch.isfinite(grads).all()):
            flat = grads.sum(0)  # an fp16 overflow: keep the inf/nan so the scaler skips this step, state untouched
        else:
            if self.cfg.conflict_stats and len(rows) > 1:
                self.conflicts.update(grads, names)
            flat = self.combiner(grads, random.Random(f"{self.cfg.seed}/{step}")) if len(rows) > 1 else grads[0]
        set_grads(flat, self.shared)

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
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "combiner": self.combiner.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "conflicts": self.conflicts.state_dict(),
            "margins": {n: self.losses[n].margin for n in self.margin_prev},
            "margin_prev": self.margin_prev,
        }

    def load_state(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
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
