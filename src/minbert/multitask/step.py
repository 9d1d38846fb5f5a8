"""One optimizer step, whatever the techniques: `train_step` reads top to bottom.

losses (one fused pass of all tasks' sentences, or one pass per task) -> one backward of the summed loss (wrapped by
DistributedDataParallel with several processes), or one backward per task into a gradient row on the shared encoder
and a combiner (PCGrad, GradVac) making one gradient of the rows -> fp16 unscaling, the non-finite check, clipping
-> AdamW -> the regularizers' after-step updates. The parts come built from the config (multitask/techniques.py).
"""

from __future__ import annotations

import contextlib
import math
import random
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from minbert.distributed import all_reduce_sum

if TYPE_CHECKING:
    from minbert.multitask.techniques import Techniques

Micro = list[tuple[dict, dict]]  # per micro-batch: {task: Batch}, {task: its share of the task's global batch}


def train_step(t: Techniques, optimizer, micro: Micro, step: int) -> tuple[dict[str, float], bool]:
    """One optimizer step over this process's micro-batches. Returns each task's weighted loss on the global batch,
    and whether the update was skipped for a non-finite loss or gradient."""
    optimizer.zero_grad(set_to_none=True)
    totals = {n: 0.0 for n in micro[0][0]}
    if t.per_task:  # a combiner or conflict statistics: one gradient row per task on the shared encoder
        rows = task_gradients(t, micro, totals)
        set_grads(combine(t, rows, list(totals), step), t.shared)
    else:
        summed_backward(t, micro, totals)
    losses = dict(zip(totals, all_reduce_sum(torch.tensor(list(totals.values()), dtype=torch.float64)).tolist()))
    if t.scaler is not None:
        t.scaler.unscale_(optimizer)  # clipping and AdamW see true gradients; inf/nan makes the scaler skip the step
    elif not (all(math.isfinite(v) for v in losses.values()) and grads_finite(t.model)):
        # a non-finite update would poison the weights and AdamW's moments: skip it (the gradients are the same on
        # every process, so all skip together); the training loop counts and limits these
        optimizer.zero_grad(set_to_none=True)
        return losses, True
    if t.cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.max_grad_norm)
    if t.scaler is not None:
        t.scaler.step(optimizer)
        t.scaler.update()
    else:
        optimizer.step()
    for reg in t.regularizers.values():
        reg.after_step(t.model)  # e.g. Bregman's EMA teacher follows the new weights
    return losses, False


def summed_backward(t: Techniques, micro: Micro, totals: dict[str, float]) -> None:
    """The summed loss of each micro-batch through one module call and one backward; with several processes DDP
    averages the gradients during the last micro-batch's backward."""
    for i, (batches, fracs) in enumerate(micro):
        sync = t.ddp is None or i == len(micro) - 1
        with contextlib.nullcontext() if sync else t.ddp.no_sync():
            total, losses = (t.ddp or t.step_loss)(batches, fracs)
            scale(t, total * t.world).backward()  # DDP averages over processes; the shares already sum to 1
        for n, loss in losses.items():
            totals[n] += fracs[n] * loss.item()


def task_gradients(t: Techniques, micro: Micro, totals: dict[str, float]) -> list[torch.Tensor]:
    """Per-task gradient rows on the shared parameters, summed over micro-batches and processes (one pass per task;
    `torch.autograd.grad` hands back the shared parameters' gradient without touching .grad). The task's own
    parameters (head, PALs) get their gradient in .grad, also summed across processes."""
    rows = {}
    for batches, fracs in micro:
        for n, b in batches.items():
            loss = t.task_loss(n, b) * fracs[n]
            grads = torch.autograd.grad(scale(t, loss), t.shared + t.own[n], allow_unused=True)
            k = len(t.shared)
            flat = flat_grads(grads[:k], t.shared)
            rows[n] = flat if n not in rows else rows[n] + flat
            for p, g in zip(t.own[n], grads[k:]):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
            totals[n] += loss.item()
    if t.world > 1:
        own = [p for n in rows for p in t.own[n]]
        set_grads(all_reduce_sum(flat_grads([p.grad for p in own], own)), own)
    return [all_reduce_sum(rows[n]) for n in totals]


def combine(t: Techniques, rows: list[torch.Tensor], names: list[str], step: int) -> torch.Tensor:
    """G (T, P) -> one gradient on the shared parameters; records conflict statistics when asked."""
    grads = torch.stack(rows)
    if t.scaler is not None and not bool(torch.isfinite(grads).all()):
        return grads.sum(0)  # an fp16 overflow: keep the inf/nan so the scaler skips this step, state untouched
    if t.cfg.conflict_stats and len(rows) > 1:
        t.conflicts.update(grads, names)
    return t.combiner(grads, random.Random(f"{t.cfg.seed}/{step}")) if len(rows) > 1 else grads[0]


def scale(t: Techniques, loss: torch.Tensor) -> torch.Tensor:
    return loss if t.scaler is None else t.scaler.scale(loss)


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
