"""One optimizer step, whatever the techniques: `Stepper.step` reads top to bottom.

The objective's losses (multitask/objective.py) -> one backward of the summed loss, each task's loss times its
weighting's weight (the objective wrapped by DistributedDataParallel with several processes), or one backward per
task into a gradient row on the shared encoder, each row times its weight, and a combiner (PCGrad, GradVac, UPGrad,
...) making one gradient of the rows -> fp16 unscaling, the non-finite check, clipping -> AdamW -> the objective's
after-step updates, the weights' moving average (`ema_decay`) and what the weighting learns from the step. The
stepper owns what the update needs besides the losses: the gradient scaler, DDP, the combiner, the conflict
statistics, the moving average and the split into shared and task parameters.

On a GPU (`SYNC_FREE_DEVICES`) a plain summed step - no combiner, loss weighting, fp16 scaler, moving average or
regularizer, the fused AdamW kernel - reads nothing back from the device (issue 44): the non-finite check becomes
AdamW's `found_inf`, so a bad update is skipped on the device, and the step's losses and whether it was skipped stay
there (`StepResult.pending`) until the training loop reads a log window's at once (`settle`). Its updates are the
same as the ordinary step's (tests/test_stepper.py runs both on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from minbert import torch_private as private
from minbert.combiners import COMBINERS
from minbert.distributed import all_reduce_sum, broadcast_tensors, current
from minbert.errors import MinbertError
from minbert.multitask.conflicts import ConflictStats
from minbert.multitask.ema import EMA
from minbert.multitask.objective import Objective, Terms
from minbert.optim.grads import all_finite, clip_grad_norm_, coalesce_sparse, finite
from minbert.registry import build
from minbert.weighting import Equal

SYNC_FREE_DEVICES = {"cuda"}  # device types whose plain summed steps read nothing back (tests add "cpu")

Micro = list[tuple[dict, dict]]  # per micro-batch: {task: Batch}, {task: its share of the task's global batch}


@dataclass
class StepResult:
    losses: dict[str, float]  # each task's weighted loss on the global batch
    terms: Terms  # the regularizers' terms, one per task batch
    skipped: bool  # the update was skipped for a non-finite loss or gradient
    # a sync-free step's task names and, still on the device, their losses and a last 1.0 where it was skipped:
    # `losses` and `skipped` are filled in by `settle`
    pending: tuple[list[str], torch.Tensor] | None = None


def settle(results: list[StepResult]) -> list[StepResult]:
    """The results with every sync-free step's losses and skip read back from the device, all in one transfer."""
    waiting = [r for r in results if r.pending is not None]
    if waiting:
        values, at = torch.cat([r.pending[1] for r in waiting]).tolist(), 0
        for r in waiting:
            names = r.pending[0]
            mine, at = values[at : at + len(names) + 1], at + len(names) + 1  # its losses, then its skip flag
            r.losses, r.skipped, r.pending = dict(zip(names, mine)), mine[-1] == 1.0, None
    return results


class Stepper:
    def __init__(self, objective: Objective, device: torch.device):
        cfg, model = objective.cfg, objective.model
        self.cfg, self.objective, self.model = cfg, objective, model
        self.combiner = build(COMBINERS, cfg.combiner, cfg.combiner_args)
        self.combiner.bind([(n, p.numel()) for n, p in model.bert.named_parameters() if p.requires_grad])
        self.conflicts = ConflictStats()
        # per-task gradients are only materialized when something needs them
        self.per_task = cfg.per_task_gradients
        self.shared = model.shared_parameters()
        self.own = {n: model.task_parameters(n) for n in cfg.tasks}
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None  # the averaged weights, when asked
        self.world = current().world
        self.sync_free = (
            device.type in SYNC_FREE_DEVICES and not self.per_task and self.scaler is None and self.ema is None
            and not objective.regularizers and isinstance(objective.weighting, Equal) and not cfg.lazy_word_embeddings
            and private.has_fused_adamw()
        )  # fmt: skip
        if self.world > 1 and cfg.lazy_word_embeddings:
            raise MinbertError(
                "lazy_word_embeddings: not with several processes (their gradients are all-reduced dense); "
                "run one process or set lazy_word_embeddings=false"
            )
        self.ddp = None
        if self.world > 1 and self.per_task:
            broadcast_tensors(model.state_dict().values())  # rows are all-reduced by hand: sync weights once
        elif self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            # find_unused_parameters: heads of tasks not in a step, and the pooler under mean pooling, get no gradient
            self.ddp = DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)

    def step(self, optimizer, micro: Micro, step: int) -> StepResult:
        """One optimizer step over this process's micro-batches."""
        optimizer.zero_grad(set_to_none=True)
        self.objective.step = step
        totals = {n: 0.0 for n in micro[0][0]}
        terms: Terms = {k: [] for k in self.objective.regularizers}
        if self.per_task:  # a combiner or conflict statistics: one gradient row per task on the shared encoder
            rows = self.task_gradients(micro, totals, terms)
            losses = summed_over_processes(totals)
            self.weight_rows(rows, losses, step)
            set_grads(self.combine(rows, list(totals), step), self.shared)
        else:
            self.summed_backward(micro, totals, terms)
            if self.sync_free:
                return self.update_on_device(optimizer, list(totals), summed_over_processes(totals, read=False), terms)
            losses = summed_over_processes(totals)
        coalesce_sparse(self.model.parameters())  # a lazily updated table's rows summed (optim/grads.py)
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)  # clipping and AdamW see true gradients; inf/nan makes it skip the step
        elif not (all(math.isfinite(v) for v in losses.values()) and grads_finite(self.model)):
            # a non-finite update would poison the weights and AdamW's moments: skip it (the gradients are the same
            # on every process, so all skip together); the training loop counts and limits these
            optimizer.zero_grad(set_to_none=True)
            return StepResult(losses, terms, True)
        if self.cfg.max_grad_norm:
            clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        self.objective.after_step()
        if self.ema is not None:
            self.ema.update(self.model)
        weighting = self.objective.weighting
        if all(math.isfinite(v) for v in losses.values()):  # after the update: what the weighting learns from it
            weighting.learn(losses, self.losses_again(micro) if weighting.after else None)
        return StepResult(losses, terms, False)

    def update_on_device(self, optimizer, names: list[str], losses: torch.Tensor, terms: Terms) -> StepResult:
        """The rest of a sync-free step: AdamW told on the device whether to skip the update - where a loss or the
        sum of the gradients' norms is not finite, the ordinary step's test (`all_finite`) - and clipping."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        found_inf = (~(finite([p.grad for p in params]) & torch.isfinite(losses.sum()))).float()
        if self.cfg.max_grad_norm:  # as the ordinary step clips (a non-finite gradient: the kernel skips anyway)
            clip_grad_norm_(params, self.cfg.max_grad_norm)
        optimizer.step(found_inf=found_inf)
        return StepResult({}, terms, False, pending=(names, torch.cat([losses, found_inf.double()[None]])))

    def summed_backward(self, micro: Micro, totals: dict[str, float], terms: Terms) -> None:
        """The summed loss of each micro-batch through one module call and one backward; with several processes DDP
        averages the gradients during the last micro-batch's backward."""
        for i, (batches, fracs) in enumerate(micro):
            sync = self.ddp is None or i == len(micro) - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                total, losses, mine = (self.ddp or self.objective)(batches, fracs)
                self.scale(total * self.world).backward()  # DDP averages over processes; the shares sum to 1
            for n, loss in losses.items():  # on the device: the step reads them back at most once
                totals[n] += fracs[n] * loss.detach().double()
            for k, v in mine.items():
                terms[k] += v

    def task_gradients(self, micro: Micro, totals: dict[str, float], terms: Terms) -> torch.Tensor:
        """Per-task gradient rows on the shared parameters, summed over micro-batches and processes (one pass per
        task; `torch.autograd.grad` hands back the shared parameters' gradient without touching .grad). The task's
        own parameters (head, PALs) get their gradient in .grad, also summed across processes."""
        shared, names = self.shared, list(totals)
        P = sum(p.numel() for p in shared)
        rows = torch.empty(len(names), P, dtype=shared[0].dtype, device=shared[0].device)  # G, (T, P)
        written = set()
        for batches, fracs in micro:
            for n, b in batches.items():
                loss = self.objective.task_loss(n, b, terms=terms) * fracs[n]
                grads = torch.autograd.grad(self.scale(loss), shared + self.own[n], allow_unused=True)
                row = rows[names.index(n)]
                if n in written:
                    row += flat_grads(grads[: len(shared)], shared)
                else:  # the task's first micro-batch: its gradient written into its row of G, no copy
                    flat_grads(grads[: len(shared)], shared, out=row)
                    written.add(n)
                for p, g in zip(self.own[n], grads[len(shared) :]):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad + g
                totals[n] += loss.item()
        if self.world > 1:
            own = [p for n in names for p in self.own[n]]
            set_grads(all_reduce_sum(flat_grads([p.grad for p in own], own)), own)
            all_reduce_sum(rows)
        return rows

    def weight_rows(self, rows: torch.Tensor, losses: dict[str, float], step: int) -> None:
        """With a loss weighting: each task's gradient row, and its own parameters' gradients, times its weight."""
        if isinstance(self.objective.weighting, Equal):
            return
        w = self.objective.weighting.weights(losses, step)
        self.objective.used.update(w)
        for t, n in enumerate(losses):
            rows[t] *= w[n]
            for p in self.own[n]:
                if p.grad is not None:
                    p.grad = p.grad * w[n]

    def losses_again(self, micro: Micro) -> dict[str, float]:
        """The step's task losses on the same micro-batches under the updated weights (FAMO's L'), all-reduced as the
        step's: one forward pass more, in the model's training mode, as the reference code computes it."""
        totals = {n: 0.0 for n in micro[0][0]}
        for batches, fracs in micro:
            for n, b in batches.items():
                totals[n] += fracs[n] * self.objective.task_loss(n, b).item()
        return summed_over_processes(totals)

    def combine(self, grads: torch.Tensor, names: list[str], step: int) -> torch.Tensor:
        """G (T, P) -> one gradient on the shared parameters; records conflict statistics when asked."""
        if self.scaler is not None and not bool(torch.isfinite(grads).all()):
            return grads.sum(0)  # an fp16 overflow: keep the inf/nan so the scaler skips this step, state untouched
        if self.cfg.conflict_stats and len(names) > 1:
            self.conflicts.update(grads, names)
        rng = random.Random(f"{self.cfg.seed}/{step}")
        return self.combiner(grads, rng, names) if len(names) > 1 else grads[0]

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.scaler is None else self.scaler.scale(loss)

    def end_epoch(self) -> dict:
        """The epoch's conflict statistics (then reset) and what the combiner did, to log."""
        record = {}
        if self.cfg.conflict_stats:
            record.update(self.conflicts.summary())
            self.conflicts.reset()
        record.update(self.combiner.epoch_record())
        record.update(self.objective.weighting.epoch_record())
        return record

    def state(self) -> dict:
        return {
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "combiner": self.combiner.state_dict(),
            "weighting": self.objective.weighting.state_dict(),
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "conflicts": self.conflicts.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.combiner.load_state_dict(state["combiner"])
        self.objective.weighting.load_state_dict(state.get("weighting", {}))  # none before weightings existed
        self.conflicts.load_state_dict(state["conflicts"])


def summed_over_processes(totals: dict, read: bool = True):
    """Each task's loss total (a float, or a tensor on the device) summed over the processes, in float64 (as it is
    with one process): read back as {task: total}, or (read=False) the vector of totals on the device."""
    device = next((v.device for v in totals.values() if torch.is_tensor(v)), torch.device("cpu"))
    vec = all_reduce_sum(torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in totals.values()]))
    return dict(zip(totals, vec.tolist())) if read else vec


def flat_grads(grads, params, out: torch.Tensor | None = None) -> torch.Tensor:
    """One flat row from per-parameter gradients, zeros where a parameter got none (into `out` where given)."""
    parts = [g.reshape(-1) if g is not None else p.new_zeros(p.numel()) for g, p in zip(grads, params)]
    return torch.cat(parts) if out is None else torch.cat(parts, out=out)


def grads_finite(model: nn.Module) -> bool:
    return all_finite([p.grad for p in model.parameters() if p.grad is not None])


def set_grads(flat: torch.Tensor, params) -> None:
    """A flat row back into the parameters' .grad, as views of it (no copy: the row is this step's alone)."""
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p)
