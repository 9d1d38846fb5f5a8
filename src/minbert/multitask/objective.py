"""What one training step minimizes, as one module (`Objective`, the module DistributedDataParallel wraps).

For each task of the step, on its batch: the head's output (the model's one multitask forward: one fused encoder pass
of all the step's sentences where it can, model/multitask.py), its loss, mixed with the distillation term when
teachers gave targets, plus its extra losses and its regularizer terms, times the task's weight. `forward` sums the
tasks with each task's share of its global batch and hands back the total, each task's loss, and the regularizer terms
to log; `task_loss` is one task's, for the steps that need one gradient per task. Nothing here touches gradients or
the optimizer: that is multitask/stepper.py.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from minbert.distributed import all_reduce_sum, current
from minbert.losses import LOSSES
from minbert.model.outputs import HeadOutput
from minbert.multitask.config import TrainConfig
from minbert.multitask.distill import distill_loss
from minbert.registry import build
from minbert.regularizers import REGULARIZERS
from minbert.runs import autocast
from minbert.weighting import WEIGHTINGS, Equal

log = logging.getLogger(__name__)

Terms = dict[str, list[float]]  # each regularizer's term, one value per task batch


class Objective(nn.Module):
    def __init__(self, cfg: TrainConfig, model: nn.Module, device: torch.device):
        super().__init__()
        self.model = model  # registered, so DDP sees (and first broadcasts) its parameters
        self.cfg, self.device = cfg, device
        self.autocast = autocast(device, cfg.precision)  # the context maker, resolved once
        tasks = {n: cfg.task(n) for n in cfg.tasks}
        self.weight = {n: t.weight for n, t in tasks.items()}
        self.loss_weight = {n: t.loss_weight for n, t in tasks.items()}
        self.losses = {n: build(LOSSES, t.loss, t.loss_args) for n, t in tasks.items()}
        self.needs = {n: LOSSES[t.loss].needs for n, t in tasks.items()}
        self.extra = {
            n: [
                (build(LOSSES, k, {a: v for a, v in args.items() if a != "weight"}), args.get("weight", 1.0))
                for k, args in t.extra_losses.items()
            ]
            for n, t in tasks.items()
        }
        self.regularizers = {k: build(REGULARIZERS, k, a) for k, a in cfg.regularizers.items()}
        self.weighting = build(WEIGHTINGS, cfg.weighting, cfg.weighting_args)  # how the task losses are weighted
        self.weighting.bind(list(cfg.tasks))
        self.step = 0  # the optimizer step being computed (the stepper sets it): RLW's draw
        self.used: dict[str, float] = {}  # each task's last loss weight, to log
        # one encoder pass for all of a step's tasks (the model knows when its own modules allow it), except where
        # per-task gradients need a graph per task
        self.fused = cfg.fused and not cfg.per_task_gradients
        world = current().world
        # losses whose terms compare examples within a batch: splitting the batch changes them
        in_batch = sorted({k for t in tasks.values() for k in (t.loss, *t.extra_losses) if LOSSES[k].in_batch})
        if in_batch and (world > 1 or cfg.grad_accum > 1):
            log.warning(
                "%s draw negatives from within a batch: with grad_accum %d on %d processes each sees 1/%d of "
                "the batch, so results differ from one large batch",
                ", ".join(in_batch),
                cfg.grad_accum,
                world,
                cfg.grad_accum * world,
            )

    def forward(self, batches: dict, fracs: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor], Terms]:
        """A micro-batch's total loss (tasks weighted by `fracs`, their shares of their global batches), each task's
        loss, and the regularizer terms."""
        with self.autocast():
            outs = self.model(batches, fused=self.fused)
        losses, terms = {}, {k: [] for k in self.regularizers}
        for n, b in batches.items():
            losses[n] = self.task_loss(n, b, outs[n], terms)
        w = self.loss_weights(losses, fracs)
        return sum(fracs[n] * w[n] * loss for n, loss in losses.items()), losses, terms

    def loss_weights(self, losses: dict[str, torch.Tensor], fracs: dict[str, float]) -> dict[str, float]:
        """The weighting's multiplier of each task's loss, from the losses' values over every process (each
        process's loss weighted by its share of the global batch); all 1 for `equal`, with nothing computed."""
        if isinstance(self.weighting, Equal):
            return dict.fromkeys(losses, 1.0)
        names = list(losses)
        parts = [fracs[n] * float(losses[n].detach()) for n in names] + [fracs[n] for n in names]
        sums = all_reduce_sum(torch.tensor(parts, dtype=torch.float64)).tolist()
        values = {n: sums[i] / sums[len(names) + i] for i, n in enumerate(names)}
        w = self.weighting.weights(values, self.step)
        self.used.update(w)
        return w

    def task_loss(self, name: str, batch, out: HeadOutput | None = None, terms: Terms | None = None) -> torch.Tensor:
        """The weighted loss of one task's batch: its loss, extra losses and regularizer terms (appended to `terms`
        when given). `out`: the head output when the model's forward has computed it already."""
        with self.autocast():
            out = self.model.task_output(name, batch) if out is None else out
            if batch.keys is not None:  # which rows repeat a text: in-batch losses mask them out as negatives
                out = out.replace(keys=batch.keys)
            loss = self.losses[name](out, batch.labels) * self.loss_weight[name]
            if batch.teacher is not None:  # distillation: mixed with the gold loss (multitask/distill.py)
                d = self.cfg.distill
                regression, scale = self.model.specs[name].regression, self.model.cosine_scale(name)
                term = distill_loss(out, batch.teacher, regression, scale, d.temperature)
                loss = (1 - d.weight) * loss + d.weight * term
            for fn, w in self.extra[name]:
                loss = loss + w * fn(out, batch.labels)
            for k, reg in self.regularizers.items():
                term = reg(self.model, name, batch, out, self.needs[name])
                if terms is not None:
                    terms[k].append(float(term.detach()))
                loss = loss + term
        return loss * self.weight[name]

    def after_step(self) -> None:
        """After each optimizer step: the regularizers' updates (Bregman's EMA teacher follows the new weights)."""
        for reg in self.regularizers.values():
            reg.after_step(self.model)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{k}/{t}": v for k, reg in self.regularizers.items() for t, v in reg.state_dict().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, reg in self.regularizers.items():
            mine = {t.removeprefix(f"{k}/"): v for t, v in tensors.items() if t.startswith(f"{k}/")}
            reg.load_state_dict(mine)
