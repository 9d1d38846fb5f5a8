"""How one optimizer step runs, whatever the techniques: the summed loss of each micro-batch through one module call
(so DistributedDataParallel can wrap it: one backward, gradients averaged during it), or, when a gradient combiner
or conflict statistics need them, one gradient row per task on the shared parameters (summed over micro-batches and
processes) combined into one; then fp16 unscaling, clipping and the optimizer step."""

from __future__ import annotations

import contextlib
import math
import random
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from minbert.distributed import all_reduce_sum, broadcast_tensors, current

Micro = list[tuple[dict, dict]]  # per micro-batch: {task: Batch}, {task: its share of the task's global batch}


def flat_grads(grads, params) -> torch.Tensor:
    """One flat row from per-parameter gradients, zeros where a parameter got none."""
    return torch.cat([g.reshape(-1) if g is not None else p.new_zeros(p.numel()) for g, p in zip(grads, params)])


def grads_finite(model: nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum()))


def set_grads(flat: torch.Tensor, params) -> None:
    """A flat row back into the parameters' .grad."""
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p).clone()


class StepLoss(nn.Module):
    """A micro-batch's summed loss as one module call, so DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module, losses: Callable[[dict], dict]):
        super().__init__()
        self.model = model  # registered, so DDP sees (and first broadcasts) its parameters
        self.losses = losses

    def forward(self, batches: dict, fracs: dict[str, float]):
        losses = self.losses(batches)
        return sum(fracs[n] * loss for n, loss in losses.items()), losses


class Step:
    """`losses(batches) -> {task: loss}` for a micro-batch; `task_loss(task, batch) -> loss` for one task alone;
    `combiner(G (T, P), rng) -> (P,)`; `conflicts` records per-task gradient statistics when given."""

    def __init__(self, cfg, model, device, losses, task_loss, combiner, conflicts=None):
        self.cfg, self.model, self.task_loss, self.combiner, self.conflicts = cfg, model, task_loss, combiner, conflicts
        # per-task gradients are only materialized when something needs them; plain summing just accumulates
        self.per_task = cfg.combiner != "sum" or cfg.conflict_stats
        self.shared = model.shared_parameters()
        self.own = {
            n: [
                p
                for m in (model.heads[n], model.pals[n] if model.pals is not None else None)
                if m is not None
                for p in m.parameters()
                if p.requires_grad
            ]
            for n in cfg.tasks
        }
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.world = current().world
        self.step_loss = StepLoss(model, losses)
        self.skipped = False  # whether the last step's update was skipped for a non-finite loss or gradient
        self.ddp = None
        if self.world > 1 and self.per_task:
            broadcast_tensors(
                model.state_dict().values()
            )  # rows are all-reduced by hand (task_grads): sync weights once
        elif self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            # find_unused_parameters: heads of tasks not in a step, and the pooler under mean pooling, get no gradient
            self.ddp = DistributedDataParallel(self.step_loss, device_ids=ids, find_unused_parameters=True)

    def run(self, optimizer, micro: Micro, step: int) -> dict[str, float]:
        """One optimizer step over this process's micro-batches; returns each task's weighted loss on the global
        batch."""
        optimizer.zero_grad(set_to_none=True)
        totals = {n: 0.0 for n in micro[0][0]}
        if self.per_task:
            self.combine(self.task_grads(micro, totals), list(totals), step)
        else:
            for i, (batches, fracs) in enumerate(micro):
                sync = self.ddp is None or i == len(micro) - 1  # average across processes once, after the last
                with contextlib.nullcontext() if sync else self.ddp.no_sync():
                    total, losses = (self.ddp or self.step_loss)(batches, fracs)
                    self.scale(
                        total * self.world
                    ).backward()  # DDP averages over processes; the shares already sum to 1
                for n, loss in losses.items():
                    totals[n] += fracs[n] * loss.item()
        reduced = dict(zip(totals, all_reduce_sum(torch.tensor(list(totals.values()), dtype=torch.float64)).tolist()))
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)  # clipping and AdamW see true gradients; inf/nan skips the step
        elif not (all(math.isfinite(v) for v in reduced.values()) and grads_finite(self.model)):
            # a non-finite loss or gradient would poison the weights and AdamW's moments: skip this update (the
            # gradients are the same on every process, so all skip together); the loop counts and limits these
            optimizer.zero_grad(set_to_none=True)
            self.skipped = True
            return reduced
        self.skipped = False
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return reduced

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
            if self.conflicts is not None and len(rows) > 1:
                self.conflicts.update(grads, names)
            flat = self.combiner(grads, random.Random(f"{self.cfg.seed}/{step}")) if len(rows) > 1 else grads[0]
        set_grads(flat, self.shared)
