"""The multitask training recipe: one shared encoder, a schedule of task batches, AdamW, evaluation on every dev set
after each epoch, the best epoch kept by overall score, resumable at any checkpoint.

    minbert train configs/quickstart.yaml [key.sub=value ...]
    minbert train --resume runs/quickstart-...

`Trainer` splits it the way torchtune's recipes do: `setup` (model, data, optimizer, techniques, run directory),
`restore` (a checkpoint's state), `train_epoch` (the steps of one epoch; one step is multitask/stepper.py),
`evaluate_epoch` (dev metrics, the best epoch kept) and `finish` (test predictions, summary). Everything a checkpoint
restores besides tensors is one `TrainState`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minbert import allocator
from minbert.config import dump_yaml
from minbert.distributed import Dist, all_gather, barrier, broadcast, current, setup, teardown
from minbert.errors import MinbertError
from minbert.files import atomic_write_text
from minbert.model import check_fits, resolve_checkpoint
from minbert.multitask.checks import check_effective, check_trainable
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, step_batches
from minbert.multitask.distill import cached_targets, fingerprint, teacher_targets
from minbert.multitask.evaluate import results_table, write_task_predictions
from minbert.multitask.extend import extended, freeze_kept, load_encoder, new_task_prefixes
from minbert.multitask.run import build, load_data, load_run_config, resume_config  # noqa: F401 (re-exported)
from minbert.multitask.runner import Runner
from minbert.multitask.state import load_snapshot, save_snapshot, write_adapter
from minbert.multitask.stepper import StepResult, settle
from minbert.multitask.techniques import Techniques
from minbert.optim import AdamW
from minbert.runs import (
    MetricsLog,
    NoLog,
    RunLock,
    check_run_dir,
    clear_run_dir,
    new_run_dir,
    progress,
    release_memory,
    resolve_precision,
    save_tensors,
    seed_everything,
    set_threads,
)

log = logging.getLogger(__name__)


def _sums(tasks) -> dict[str, list]:
    return {n: [0.0, 0] for n in tasks}


@dataclass
class TrainState:
    """Where training stands: everything a checkpoint restores besides weights, optimizer moments and RNG (JSON)."""

    tasks: list[str]
    epoch: int = 1
    step_in_epoch: int = 0
    global_step: int = 0
    best: float = -1.0  # the best epoch's dev score so far (early_stopping.metric; overall by default)
    best_epoch: int = 0
    elapsed: float = 0.0  # wall seconds before this session (a resumed run's clock continues)
    consumed: dict[str, int] = field(default_factory=dict)  # batches drawn per task
    epoch_loss: dict[str, list] = field(default_factory=dict)  # per task [sum, count] this epoch
    window: dict[str, list] = field(default_factory=dict)  # per task [sum, count] since the last log record
    bad_steps: int = 0  # non-finite steps in a row (the divergence guard)
    skipped: int = 0  # non-finite steps in all
    loss_ema: dict[str, float] = field(default_factory=dict)  # running loss per task (the divergence guard)
    reg_window: dict[str, list] = field(default_factory=dict)  # per regularizer [sum, count] since the last log
    stopped: str = ""  # why training stopped early (a time or step budget, early stopping)
    techniques: dict = field(default_factory=dict)  # the techniques' own state (Techniques.state)

    def __post_init__(self):
        self.consumed = self.consumed or {n: 0 for n in self.tasks}
        self.epoch_loss = self.epoch_loss or _sums(self.tasks)
        self.window = self.window or _sums(self.tasks)

    @classmethod
    def from_json(cls, saved: dict) -> TrainState:
        """A checkpoint's state.json (keys it does not know, like the optimizer's, are left out)."""
        names = {f.name for f in dataclasses.fields(cls)}
        state = {k: v for k, v in saved.items() if k in names} | {"tasks": list(saved["consumed"])}
        if "reg_window" not in saved:  # saved when the techniques kept it
            state["reg_window"] = saved.get("techniques", {}).get("reg_window", {})
        return cls(**state)

    def count(self, losses: dict[str, float]) -> None:
        for name, loss in losses.items():
            for acc in (self.window[name], self.epoch_loss[name]):
                acc[0] += loss
                acc[1] += 1

    def count_terms(self, terms: dict[str, list[float]]) -> None:
        for k, values in terms.items():
            acc = self.reg_window.setdefault(k, [0.0, 0])
            acc[0] += sum(values)
            acc[1] += len(values)

    def take_terms(self) -> dict[str, float]:
        """Each regularizer's mean term per task batch since the last call, as `train/reg/<name>`."""
        record = {f"train/reg/{k}": a / c for k, (a, c) in self.reg_window.items() if c}
        self.reg_window = {}
        return record

    def mean(self, sums: dict[str, list]) -> dict[str, float]:
        return {f"train/loss/{n}": a / c for n, (a, c) in sums.items() if c}


TEACHER_FILE = "teacher.safetensors"  # distillation targets, computed once per run


def train(cfg: TrainConfig, resume: Path | None = None, overwrite: bool = False) -> dict:
    if resume is None:  # as the user gave it: a setting the run would ignore is refused (multitask/checks.py)
        check_effective(cfg.validate())
    cfg = extended(cfg.validate()).validate()  # from_run: the run's tasks join the config, kept as they are
    began = time.time()  # wall time counts loading and prediction too, and adds up across resumed sessions
    d, device = setup(cfg.device)  # one process, or this rank of a torchrun job
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.deterministic:  # before the first cuBLAS call (the model's build): its handle reads the workspace size
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        with contextlib.ExitStack() as held:  # the run directory's lock, released however training ends
            t = Trainer(cfg, d, device, began)
            t.setup(resume, overwrite, held)
            for epoch in range(t.st.epoch, cfg.epochs + 1):
                t.train_epoch(epoch)
                t.evaluate_epoch(epoch)
                if t.st.stopped:  # a budget ran out or early stopping: this evaluation was the last
                    log.warning("%s: training stops here", t.st.stopped)
                    t.checkpoint(epoch=cfg.epochs + 1, step_in_epoch=0)
                    break
                t.checkpoint(epoch=epoch + 1, step_in_epoch=0)
            return t.finish()
    finally:
        teardown()
        torch.use_deterministic_algorithms(was_deterministic)


class Trainer:
    def __init__(self, cfg: TrainConfig, d: Dist, device, began: float):
        self.cfg, self.d, self.device, self.began = cfg, d, device, began

    def setup(self, resume: Path | None, overwrite: bool, held: contextlib.ExitStack) -> None:
        """Model, data, optimizer and techniques; the run directory (rank 0); the state, fresh or restored."""
        cfg, d = self.cfg, self.d
        run = resume or (Path(cfg.out) if cfg.out else None)
        if d.main and run is not None:  # before any work: refuse a directory that holds another run
            check_run_dir(run, resume is not None, overwrite)
        check_fits(cfg.checkpoint, {f"tasks.{n}.max_length": cfg.task(n).max_length for n in cfg.tasks})
        if self.device.type == "cpu":
            set_threads(cfg.threads, d.local_world)
        seed_everything(cfg.seed)
        self.model, self.tok = build(cfg, self.device)
        self.data = load_data(cfg, self.tok)
        targets = self.teacher_targets(run if resume else None)
        if cfg.keep_tasks:  # adding tasks to a finished run: its weights, and only the new tasks' parameters train
            if not resume:
                try:
                    load_snapshot(Path(cfg.from_run), "best", self.model, new=new_task_prefixes(cfg))
                except MinbertError as e:  # named as the key that points at it, with the fix from here
                    raise MinbertError(
                        f"from_run: {e}; finish or repair that run (minbert train --resume {cfg.from_run}), or "
                        "point from_run at another"
                    ) from None
            freeze_kept(self.model, cfg)
        if cfg.init_from and not resume:  # a staged recipe's next stage: the previous stage's encoder
            load_encoder(Path(cfg.init_from), self.model, cfg)
        check_trainable(cfg, self.model)  # every task has something to train, a combiner something to combine
        self.runner = Runner(self.model, self.tok.pad_id, self.device, cfg.precision)
        if cfg.frozen:  # the encoder never changes: embed every data set once
            self.runner.cache_encoder(self.data)
        if d.world > 1:
            self.rank_seed()
        groups = self.model.param_groups(cfg.lr, cfg.head_lr_mult, cfg.layer_lr_decay)
        self.optimizer = AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.tech = Techniques(cfg, self.model, self.device)
        if d.main:  # only rank 0 writes: the run directory, config, metrics, checkpoints, predictions
            run = run or new_run_dir("runs", cfg.name)
            run.mkdir(parents=True, exist_ok=True)
            held.enter_context(RunLock(run))  # keeps a second process out
            check_run_dir(run, resume is not None, overwrite)  # again, now that the directory is ours
            if overwrite and not resume:
                clear_run_dir(run)
        self.run = Path(broadcast(str(run)))
        if targets and d.main and self.teacher_fresh:  # with what they were computed from (distill.fingerprint)
            save_tensors(self.run / TEACHER_FILE, targets, {"fingerprint": self.teacher_fingerprint})
        self.metrics = (
            MetricsLog(self.run / "metrics.jsonl", cfg.loggers, dataclasses.asdict(cfg)) if d.main else NoLog()
        )
        self.st = TrainState(list(cfg.tasks))
        if resume:
            self.restore()
        elif d.main:
            dump_yaml(cfg, self.run / "config.yaml")
        self.log_setup()
        self.plan()
        self.start = self.began - self.st.elapsed  # this session's loading counts too

    def log_setup(self) -> None:
        """Where the run goes, and what it runs on."""
        cfg = self.cfg
        log.info("run directory: %s", self.run)
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else ""
        chosen = " (auto)" if cfg.precision == "auto" else ""
        log.info("device %s%s, precision %s%s", self.device, f" ({name})" if name else "",
                 resolve_precision(self.device, cfg.precision), chosen)  # fmt: skip
        trims = f"; the heap trimmed every {cfg.trim_every} steps (trim_every)" if cfg.trim_every else ""
        log.info("memory allocator: %s", allocator.describe() + ("" if allocator.loaded() else trims))

    def plan(self) -> None:
        """Each task's batch stream (resumed where it stopped) and each epoch's plan of steps."""
        cfg = self.cfg
        train = self.data["train"]
        sizes = {n: len(x) for n, x in train.items()}
        self.streams = {
            n: BatchStream(
                n, x.lengths, cfg.task(n).batch_size, cfg.seed, self.st.consumed[n], cfg.task(n).batch_tokens, x.inputs
            )  # fmt: skip
            for n, x in train.items()
        }
        per_pass = {n: s.per_pass for n, s in self.streams.items()}
        self.plans = {
            e: self.tech.sampler(sizes, per_pass, e, cfg.epochs, cfg.steps_per_epoch, cfg.seed)
            for e in range(1, cfg.epochs + 1)
        }
        self.total_steps = sum(len(p) for p in self.plans.values())
        if cfg.max_steps:  # the learning-rate schedule spans the steps that will run
            self.total_steps = min(self.total_steps, cfg.max_steps)

    def teacher_targets(self, resume: Path | None) -> dict:
        """Distillation: the teachers' soft outputs on every training example, attached to the training data;
        computed once (a resumed run reads them from its folder)."""
        if not self.cfg.distill.teachers:
            return {}
        train = self.data["train"]
        self.teacher_fingerprint = fingerprint(self.cfg.distill.teachers, train)
        cached = resume / TEACHER_FILE if resume is not None else None
        targets = None
        if cached is not None and cached.is_file():
            targets = cached_targets(cached, self.teacher_fingerprint, train)
        self.teacher_fresh = targets is None
        if targets is None:
            targets = teacher_targets(self.cfg.distill.teachers, train, self.device)
        for t, target in targets.items():
            if t in train:
                train[t].teacher = target
        return targets

    def rank_seed(self, offset: int = 0) -> None:
        """Each rank's own dropout stream, seeded after the weights are built (the same everywhere; DDP broadcasts
        them). `offset` gives a resumed run a fresh stream when its checkpoint holds none for this rank."""
        torch.manual_seed(self.cfg.seed + 7919 * self.d.rank + offset)

    def restore(self) -> None:
        """The last checkpoint's weights, optimizer moments, RNG streams, techniques' state and training state."""
        tensors: dict = {}
        self.st = TrainState.from_json(load_snapshot(self.run, "last", self.model, self.optimizer, tensors))
        self.tech.load_state(self.st.techniques)
        self.tech.objective.load_tensors(tensors)
        if self.tech.stepper.ema is not None:  # the averaged weights, beside the run's own
            self.tech.stepper.ema.load_tensors(tensors, self.st.techniques.get("ema_updates", 0))
        if self.d.world > 1:  # load_snapshot restored rank 0's RNG; each rank continues its own draws
            own = tensors.get(f"rng/rank{self.d.rank}")
            if own is not None:
                torch.set_rng_state(own)
                if f"rng/cuda-rank{self.d.rank}" in tensors and self.device.type == "cuda":
                    torch.cuda.set_rng_state(tensors[f"rng/cuda-rank{self.d.rank}"])
            else:  # saved by a run with fewer processes: a fresh stream of this rank's own
                self.rank_seed(self.st.global_step)
        self.metrics.truncate_after(self.st.global_step)  # records written after the checkpoint are replayed
        log.info("resuming %s at epoch %d, step %d", self.run, self.st.epoch, self.st.global_step)

    def train_epoch(self, epoch: int) -> None:
        cfg, st, plan = self.cfg, self.st, self.plans[epoch]
        self.model.train()
        bar = progress(range(st.step_in_epoch, len(plan)), f"epoch {epoch}/{cfg.epochs}", unit="step",
                       total=len(plan), initial=st.step_in_epoch, disable=not self.d.main)  # fmt: skip
        waiting: list[tuple[int, StepResult]] = []  # steps whose losses are still on the device (sync-free steps)
        for s in bar:
            self.tech.start_step(self.optimizer, st.global_step, self.total_steps)
            # every process draws the same global batches; step_batches takes this one's share, in micro-batches
            idx = {name: self.streams[name].next() for name in plan[s]}
            micro = step_batches(self.data["train"], idx, self.tok.pad_id, self.device, self.d.rank, self.d.world,
                                 cfg.grad_accum)  # fmt: skip
            result = self.tech.stepper.step(self.optimizer, micro, st.global_step)
            st.global_step += 1
            step = st.global_step
            waiting.append((step, result))
            checkpoint = cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and s + 1 < len(plan)
            if result.pending is None or step % cfg.log_every == 0 or checkpoint:
                self.account(waiting, bar)
            if step % cfg.log_every == 0:
                skipped = {"train/skipped_steps": st.skipped} if st.skipped else {}
                weights = {f"weight/{n}": w for n, w in self.tech.objective.used.items()}  # a weighting's, if any
                record = {"step": step, "epoch": epoch, **st.mean(st.window), **st.take_terms(), **weights}
                self.metrics.write(record | skipped)
                st.window = _sums(cfg.tasks)
            if checkpoint:
                self.checkpoint(step_in_epoch=s + 1, epoch=epoch)
            if cfg.trim_every and step % cfg.trim_every == 0:
                release_memory()
            if cfg.max_steps and step >= cfg.max_steps:
                st.stopped = f"max_steps {cfg.max_steps} reached"
                break
            # every rank stops at the same step: rank 0's clock decides (with several processes, asked at log steps
            # only: the broadcast waits on every process, the host sync a GPU step does without)
            asked = self.d.world == 1 or step % cfg.log_every == 0
            if cfg.max_minutes and asked and broadcast(time.time() - self.start > 60 * cfg.max_minutes):
                st.stopped = f"max_minutes {cfg.max_minutes:g} reached at step {step}"
                break
        self.account(waiting, bar)
        bar.close()

    def account(self, waiting: list[tuple[int, StepResult]], bar) -> None:
        """The waiting steps' losses into the running sums, through the divergence guard, in step order (a sync-free
        step's read back from the device here: a log window's at once), then the waiting list emptied."""
        st = self.st
        for step, result in zip([s for s, _ in waiting], settle([r for _, r in waiting])):
            st.count_terms(result.terms)
            if guard(st, result.losses, result.skipped, step, self.cfg, self.run):  # False: skipped, not counted
                st.count(result.losses)
        waiting.clear()
        # running loss per task this epoch, and (in brackets) how many of its batches: the task mix
        bar.set_postfix({n: f"{a / c:.3f} ({c})" for n, (a, c) in st.epoch_loss.items() if c}, refresh=False)

    def evaluate_epoch(self, epoch: int) -> None:
        """Dev metrics after an epoch; a better overall score keeps this epoch as the best (snapshot and dev
        predictions) - of the averaged weights with `ema_decay`, the run's own otherwise."""
        ema = self.tech.stepper.ema
        with ema.swapped(self.model) if ema is not None else contextlib.nullcontext():
            dev = self.evaluate_weights(epoch)
        if self.cfg.keep_epochs and self.d.main:  # the run's own weights at each epoch's end, the last K kept
            state = {"epoch": epoch, "dev": dev if ema is None else {}}  # dev: of these weights, when it is theirs
            save_snapshot(self.run, "epoch", self.st.global_step, self.model, state=state, keep=self.cfg.keep_epochs)

    def evaluate_weights(self, epoch: int) -> dict[str, float]:
        cfg, st = self.cfg, self.st
        dev, dev_preds = self.runner.evaluate(self.data["dev"])
        release_memory()
        epoch_loss = st.mean(st.epoch_loss)
        extra = self.tech.end_epoch(self.optimizer, epoch, sum(epoch_loss.values()), dev)
        seconds = time.time() - self.start
        dev_log = {f"dev/{k}": v for k, v in dev.items()}
        self.metrics.write({"step": st.global_step, "epoch": epoch, "time": seconds, **epoch_loss, **dev_log, **extra})
        bad = {k: v for k, v in dev.items() if not math.isfinite(v)}
        if bad:  # NaN never compares better, so the run would go on to end with no best checkpoint
            shown = ", ".join(f"{k} {v}" for k, v in bad.items())
            kept = (
                f"the best checkpoint (epoch {st.best_epoch}) stays in" if st.best_epoch else "no checkpoint is best in"
            )
            raise MinbertError(
                f"epoch {epoch}: dev metrics not finite ({shown}): the model's outputs are degenerate (constant or "
                f"NaN), so the run stops as diverged; {kept} {self.run}; lower lr or set max_grad_norm and train again"
            )
        metric, patience = cfg.early_stopping.metric, cfg.early_stopping.patience
        improved = dev[metric] > st.best
        if self.d.main:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in dev.items())
            print(f"epoch {epoch}/{cfg.epochs}  {shown}{'  (best)' if improved else ''}  {seconds:.0f}s", flush=True)
        if improved:
            st.best, st.best_epoch = dev[metric], epoch
            if self.d.main:
                save_snapshot(self.run, "best", st.global_step, self.model, state={"epoch": epoch, "dev": dev})
                write_task_predictions(  # kept
                    self.run / "predictions", "dev", self.data["dev"], dev_preds, self.model.specs, cfg.prediction_files
                )
        st.epoch_loss = _sums(cfg.tasks)
        if patience and epoch - st.best_epoch >= patience and not st.stopped:
            st.stopped = (
                f"early stopping: no better {metric} than epoch {st.best_epoch}'s {st.best:.4f} in {patience} epoch(s)"
            )
        return dev

    def checkpoint(self, **where) -> None:
        """A resumable snapshot; `where`: the epoch and step in it that training continues from."""
        st = self.st
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise MinbertError(
                f"step {st.global_step}: the weights are no longer finite, so no checkpoint is written; the run "
                f"diverged (lr {self.cfg.lr:g}): lower lr or set max_grad_norm; the last good checkpoint stays in "
                f"{self.run}"
            )
        st.epoch, st.step_in_epoch = where["epoch"], where["step_in_epoch"]
        st.elapsed = time.time() - self.start
        st.consumed = {n: x.consumed for n, x in self.streams.items()}
        st.techniques = self.tech.state()
        tensors = self.tech.objective.tensors()
        if self.tech.stepper.ema is not None:
            tensors.update(self.tech.stepper.ema.tensors())
        if self.d.world > 1:  # every rank's own dropout stream (all ranks take part in the gather)
            tensors.update({f"rng/rank{r}": t for r, t in enumerate(all_gather(torch.get_rng_state()))})
            if self.device.type == "cuda":  # and its GPU's stream, which dropout there draws from
                cuda = all_gather(torch.cuda.get_rng_state())
                tensors.update({f"rng/cuda-rank{r}": t for r, t in enumerate(cuda)})
        if self.d.main:
            state = dataclasses.asdict(st)
            del state["tasks"]  # the same as consumed's keys
            save_snapshot(self.run, "last", st.global_step, self.model, self.optimizer, state, tensors)

    def finish(self) -> dict:
        """Reload the best epoch, write its test predictions (its dev ones were written when it was evaluated),
        print and save the results."""
        cfg, run = self.cfg, self.run
        barrier()  # rank 0 has written the best snapshot
        best = load_snapshot(run, "best", self.model)
        _, preds = self.runner.evaluate(self.data["test"])
        wall = time.time() - self.start
        summary = {"run_dir": str(run), "best_epoch": best["epoch"], "dev": best["dev"], "steps": self.st.global_step,
                   "wall_time_s": round(wall, 1), "allocator": allocator.name()}  # fmt: skip
        if self.st.stopped:
            summary["stopped"] = self.st.stopped
        if not current().main:
            return summary
        self.metrics.close()
        write_task_predictions(
            run / "predictions", "test", self.data["test"], preds, self.model.specs, cfg.prediction_files
        )
        if self.model.lora is not None and not cfg.lora.train_shared:  # what each task owns, on its own
            for task in self.model.lora:
                base = str(resolve_checkpoint(cfg.checkpoint))
                write_adapter(self.model, task, run / "adapters" / task, base=base)
        atomic_write_text(run / "summary.json", json.dumps(summary, indent=2))
        print(results_table({f"dev (best epoch {best['epoch']})": best["dev"]}, self.model.specs))
        print(f"wall time {wall:.0f}s, {self.st.global_step} steps; predictions in {run / 'predictions'}", flush=True)
        return summary


def guard(st: TrainState, losses: dict[str, float], skipped: bool, step: int, cfg: TrainConfig, run: Path) -> bool:
    """The divergence guard, after each step: counts skipped (non-finite) updates and stops the run after
    `max_bad_steps` in a row, or when a task's loss exceeds `divergence_factor` times its running mean. Returns
    whether the step's losses count."""
    if skipped:
        st.bad_steps += 1
        st.skipped += 1
        bad = ", ".join(f"{n} {v:g}" for n, v in losses.items())
        log.warning("step %d: non-finite loss or gradient (%s); update skipped", step, bad)
        if cfg.max_bad_steps and st.bad_steps >= cfg.max_bad_steps:
            raise MinbertError(
                f"step {step}: the loss or gradient is not finite for {st.bad_steps} steps in a row ({bad}): "
                f"the run diverged at lr {cfg.lr:g}; lower lr or set max_grad_norm (the last good checkpoint stays "
                f"in {run})"
            )
        return False
    if not all(math.isfinite(v) for v in losses.values()):
        return False  # fp16: the gradient scaler skipped an overflowing step itself and lowers its scale
    st.bad_steps = 0
    ema = st.loss_ema
    for n, v in losses.items():
        if cfg.divergence_factor and n in ema and v > 10 and v > cfg.divergence_factor * ema[n]:
            raise MinbertError(
                f"step {step}: task {n}'s loss is {v:.4g}, {v / ema[n]:.0f} times its running mean {ema[n]:.4g}: the "
                f"run diverged at lr {cfg.lr:g}; lower lr or set max_grad_norm (divergence_factor "
                f"{cfg.divergence_factor:g} decides; the last good checkpoint stays in {run})"
            )
        ema[n] = v if n not in ema else 0.98 * ema[n] + 0.02 * v
    return True
