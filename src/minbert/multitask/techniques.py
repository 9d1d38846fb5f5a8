"""The techniques a config switches on, assembled from their registries so the training loop names none of them:
task losses (plus extra losses), regularizers, the gradient combiner, the learning-rate schedule, dynamic margins,
and whether a step's tasks share one encoder pass; how the step itself runs is multitask/step.py.
Their state goes through checkpoints with the rest of the run."""

from __future__ import annotations

import logging

import torch
from torch.nn.parallel import DistributedDataParallel

from minbert.config import typed_args
from minbert.distributed import broadcast_tensors, current
from minbert.losses import LOSSES
from minbert.losses.dynamic_margin import DynamicMargin
from minbert.multitask.config import TrainConfig
from minbert.multitask.conflicts import ConflictStats
from minbert.multitask.distill import distill_loss
from minbert.multitask.fused import fused_forward
from minbert.multitask.step import StepLoss
from minbert.runs import autocast
from minbert.tasks import TASKS

log = logging.getLogger(__name__)


class Techniques:
    def __init__(self, cfg: TrainConfig, model, device):
        self.cfg, self.model, self.device = cfg, model, device
        self.tasks = {n: cfg.task(n) for n in cfg.tasks}
        self.losses = {n: LOSSES[t.loss](**t.loss_args) for n, t in self.tasks.items()}
        self.needs = {n: LOSSES[t.loss].needs for n, t in self.tasks.items()}
        self.extra = {
            n: [
                (LOSSES[k](**{a: v for a, v in args.items() if a != "weight"}), args.get("weight", 1.0))
                for k, args in t.extra_losses.items()
            ]
            for n, t in self.tasks.items()
        }
        built = {key: fn(**typed_args(fn, args, key)) for key, (fn, args) in cfg.technique_args().items()}
        self.regularizers = {k: built[f"regularizers.{k}"] for k in cfg.regularizers}
        self.combiner, self.lr_schedule = built["combiner_args"], built["lr_schedule_args"]
        self.conflicts = ConflictStats()
        # end-of-epoch updaters: the learning-rate schedule, then each task's dynamic margin
        self.margins = {
            n: DynamicMargin(self.losses[n], n, f"{n}/{TASKS[n].metric_name}", t.margin_step)
            for n, t in self.tasks.items()
            if t.margin_step
        }
        self.reg_window = {
            k: [0.0, 0] for k in self.regularizers
        }  # each regularizer's term: sum and count since the last log
        world = current().world
        # losses whose terms compare examples within a batch: splitting the batch changes them
        in_batch = sorted({k for t in self.tasks.values() for k in (t.loss, *t.extra_losses) if LOSSES[k].in_batch})
        if in_batch and (world > 1 or cfg.grad_accum > 1):
            log.warning(
                "%s draw negatives from within a batch: with grad_accum %d on %d processes each sees 1/%d of "
                "the batch, so results differ from one large batch",
                ", ".join(in_batch),
                cfg.grad_accum,
                world,
                cfg.grad_accum * world,
            )
        # how the step runs: per-task gradients are only materialized when something needs them
        self.per_task = cfg.combiner != "sum" or cfg.conflict_stats
        self.shared = model.shared_parameters()
        self.own = {n: model.task_parameters(n) for n in cfg.tasks}
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.world = world
        self.step_loss = StepLoss(model, self.batch_losses)
        self.ddp = None
        if world > 1 and self.per_task:
            broadcast_tensors(model.state_dict().values())  # rows are all-reduced by hand: sync weights once
        elif world > 1:
            ids = [device.index] if device.type == "cuda" else None
            # find_unused_parameters: heads of tasks not in a step, and the pooler under mean pooling, get no gradient
            self.ddp = DistributedDataParallel(self.step_loss, device_ids=ids, find_unused_parameters=True)
        # PALs put a different adapter in every layer per task, so their tasks cannot share one encoder pass
        # a frozen encoder's batches carry cached embeddings: there is no encoder pass to share
        self.fused = cfg.fused and not self.per_task and model.pals is None and not cfg.frozen

    def task_loss(self, name: str, batch, out: dict | None = None) -> torch.Tensor:
        """The weighted loss of one task's batch: its loss, extra losses and regularizer terms. `out`: the head
        output when a fused pass has computed it already."""
        with autocast(self.device, self.cfg.precision):
            out = self.model(name, batch) if out is None else out
            if batch.keys is not None:  # which rows repeat a text: in-batch losses mask them out as negatives
                out = {**out, "keys": batch.keys}
            loss = self.losses[name](out, batch.labels)
            if batch.teacher is not None:  # distillation: mixed with the gold loss (multitask/distill.py)
                d = self.cfg.distill
                term = distill_loss(out, batch.teacher, name, self.model.cosine_scale(name), d.temperature)
                loss = (1 - d.weight) * loss + d.weight * term
            for fn, w in self.extra[name]:
                loss = loss + w * fn(out, batch.labels)
            for k, reg in self.regularizers.items():
                term = reg(self.model, name, batch, out, self.needs[name])
                self.reg_window[k][0] += float(term.detach())
                self.reg_window[k][1] += 1
                loss = loss + term
        return loss * self.tasks[name].weight

    def take_log(self) -> dict[str, float]:
        """Each regularizer's mean term per task batch since the last call, as `train/reg/<name>`."""
        record = {f"train/reg/{k}": a / c for k, (a, c) in self.reg_window.items() if c}
        self.reg_window = {k: [0.0, 0] for k in self.regularizers}
        return record

    def batch_losses(self, batches: dict) -> dict[str, torch.Tensor]:
        outs = {}
        if self.fused and len(batches) > 1:
            with autocast(self.device, self.cfg.precision):
                outs = fused_forward(self.model, batches)
        return {n: self.task_loss(n, b, outs.get(n)) for n, b in batches.items()}

    def end_epoch(self, optimizer, epoch: int, train_loss: float, dev: dict[str, float]) -> dict:
        """Epoch-end updates (LR schedule, dynamic margins); returns what to log."""
        record = {}
        for updater in [self.lr_schedule, *self.margins.values()]:
            record.update(updater.on_epoch_end(optimizer, epoch, train_loss, dev))
        # the pooler's group runs at the configured rate times the schedule; with a frozen encoder, the heads' group
        pooler = self.model.bert.pooler.dense.weight
        groups = [g for g in optimizer.param_groups if any(p is pooler for p in g["params"])] or optimizer.param_groups
        record["lr"] = groups[0]["lr"]
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
            "margins": {n: m.state_dict() for n, m in self.margins.items()},
            "reg_window": self.reg_window,
        }

    def load_state(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.combiner.load_state_dict(state["combiner"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.conflicts.load_state_dict(state["conflicts"])
        for n, m in state["margins"].items():
            if not isinstance(m, dict):  # saved before margins were updaters: the margin, and the metric apart
                m = {"margin": m, "previous": state["margin_prev"][n]}
            self.margins[n].load_state_dict(m)
        self.reg_window = {k: list(v) for k, v in state.get("reg_window", self.reg_window).items()}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{k}/{t}": v for k, reg in self.regularizers.items() for t, v in reg.state_dict().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, reg in self.regularizers.items():
            mine = {t.removeprefix(f"{k}/"): v for t, v in tensors.items() if t.startswith(f"{k}/")}
            reg.load_state_dict(mine)
