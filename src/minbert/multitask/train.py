"""The multitask training loop: one shared encoder, a schedule of task batches, summed losses, AdamW, evaluation on
every dev set after each epoch, the best epoch kept by overall score, resumable at any checkpoint.

    minbert train configs/quickstart.yaml [key.sub=value ...]
    minbert train --resume runs/quickstart-...
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch

from minbert.config import dump_yaml, from_dict, load_yaml
from minbert.data import Tokenizer, choose_data_dir, data_dir, load_split, split_file
from minbert.distributed import Dist, all_gather, barrier, broadcast, current, setup, teardown
from minbert.errors import MinbertError
from minbert.model import BertModel, check_fits, resolve_checkpoint
from minbert.model.compile import compile_layers
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, TaskData, encode_task, step_batches
from minbert.multitask.evaluate import evaluate, results_table, write_task_predictions
from minbert.multitask.model import MultitaskModel
from minbert.multitask.state import load_snapshot, save_snapshot
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
    seed_everything,
    set_threads,
)
from minbert.schedules import SCHEDULES
from minbert.tasks import TASKS

log = logging.getLogger(__name__)

TRIM_EVERY = 10  # steps between handing freed heap memory back to the OS (runs.release_memory)


def load_data(cfg: TrainConfig, tok: Tokenizer, splits=("train", "dev", "test")) -> dict[str, dict[str, TaskData]]:
    """{split: {task: TaskData}}, tokenized once; a missing test file only skips that task's test predictions."""
    root = data_dir(cfg.data_dir)
    out: dict[str, dict[str, TaskData]] = {s: {} for s in splits}
    for name in cfg.tasks:
        task, tcfg = TASKS[name], cfg.task(name)
        for split in splits:
            if split == "test" and split_file(task.dataset, "test", root) is None:
                log.warning("no %s test file under %s: its test predictions are skipped", name, root)
                continue
            examples = load_split(task.dataset, split, root, cfg.strict)
            limit = tcfg.train_limit if split == "train" else tcfg.eval_limit
            out[split][name] = encode_task(task, examples[:limit] if limit else examples, tok, tcfg)
    return out


def build(cfg: TrainConfig, device) -> tuple[MultitaskModel, Tokenizer]:
    ckpt = resolve_checkpoint(cfg.checkpoint)
    drop = (
        {}
        if cfg.encoder_dropout < 0
        else {"hidden_dropout_prob": cfg.encoder_dropout, "attention_probs_dropout_prob": cfg.encoder_dropout}
    )
    bert = BertModel.from_pretrained(ckpt, **drop)
    bert.gradient_checkpointing = cfg.grad_checkpointing
    if cfg.freeze_word_embeddings:
        bert.embeddings.word_embeddings.weight.requires_grad_(False)
    if cfg.compile:
        compile_layers(bert, cfg.compile)
    model = MultitaskModel(bert, {n: cfg.task(n) for n in cfg.tasks}, cfg.pals)
    return model.to(device), Tokenizer.from_pretrained(ckpt)


def train(cfg: TrainConfig, resume: Path | None = None, overwrite: bool = False) -> dict:
    cfg = cfg.validate()
    began = time.time()  # wall time counts loading and prediction too, and adds up across resumed sessions
    d, device = setup(cfg.device)  # one process, or this rank of a torchrun job
    try:
        with contextlib.ExitStack() as held:  # the run directory's lock, released however training ends
            return _train(cfg, resume, began, d, device, held, overwrite)
    finally:
        teardown()


def _train(
    cfg: TrainConfig, resume: Path | None, began: float, d: Dist, device, held: contextlib.ExitStack, overwrite: bool
) -> dict:
    run = resume or (Path(cfg.out) if cfg.out else None)
    if d.main and run is not None:  # before any work: refuse a directory that holds another run
        check_run_dir(run, resume is not None, overwrite)
    check_fits(cfg.checkpoint, {f"tasks.{n}.max_length": cfg.task(n).max_length for n in cfg.tasks})
    if device.type == "cpu":
        set_threads(cfg.threads, d.local_world)
    seed_everything(cfg.seed)
    model, tok = build(cfg, device)
    data = load_data(cfg, tok)

    def rank_seed(offset: int = 0) -> None:
        """Each rank's own dropout stream, seeded after the weights are built (the same everywhere; DDP broadcasts
        them). `offset` gives a resumed run a fresh stream when its checkpoint holds none for this rank."""
        torch.manual_seed(cfg.seed + 7919 * d.rank + offset)

    if d.world > 1:
        rank_seed()
    optimizer = AdamW(
        model.param_groups(cfg.lr, cfg.head_lr_mult, cfg.layer_lr_decay), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    tech = Techniques(cfg, model, device)

    if d.main:  # only rank 0 writes: the run directory, config, metrics, checkpoints, predictions
        run = run or new_run_dir("runs", cfg.name)
        run.mkdir(parents=True, exist_ok=True)
        held.enter_context(
            RunLock(run, take_over=resume is not None)
        )  # a second process training into this directory is refused
        check_run_dir(run, resume is not None, overwrite)  # again, now that the directory is ours
        if overwrite and not resume:
            clear_run_dir(run)
    run = Path(broadcast(str(run)))
    metrics = MetricsLog(run / "metrics.jsonl") if d.main else NoLog()
    st = {
        "epoch": 1,
        "step_in_epoch": 0,
        "global_step": 0,
        "best": -1.0,
        "best_epoch": 0,
        "elapsed": 0.0,
        "consumed": {n: 0 for n in cfg.tasks},
        "epoch_loss": {n: [0.0, 0] for n in cfg.tasks},
        "window": {n: [0.0, 0] for n in cfg.tasks},
    }  # loss sums and counts: this epoch's, and since the last log
    if resume:
        tensors: dict = {}
        st = load_snapshot(run, "last", model, optimizer, tensors)
        tech.load_state(st["techniques"])
        tech.load_tensors(tensors)
        if d.world > 1:  # load_snapshot restored rank 0's RNG; each rank continues its own draws
            own = tensors.get(f"rng/rank{d.rank}")
            if own is not None:
                torch.set_rng_state(own)
            else:  # saved by a run with fewer processes: a fresh stream of this rank's own
                rank_seed(st["global_step"])
        metrics.truncate_after(st["global_step"])  # records written after the checkpoint are replayed
        log.info("resuming %s at epoch %d, step %d", run, st["epoch"], st["global_step"])
    elif d.main:
        dump_yaml(cfg, run / "config.yaml")
    log.info("run directory: %s", run)

    train_data = data["train"]
    sizes = {n: len(d) for n, d in train_data.items()}
    per_pass = {n: -(-sizes[n] // cfg.task(n).batch_size) for n in cfg.tasks}
    streams = {
        n: BatchStream(n, d.lengths, cfg.task(n).batch_size, cfg.seed, st["consumed"][n]) for n, d in train_data.items()
    }
    plans = {
        e: SCHEDULES[cfg.schedule](sizes, per_pass, e, cfg.epochs, cfg.steps_per_epoch, cfg.seed)
        for e in range(1, cfg.epochs + 1)
    }
    total_steps = sum(len(p) for p in plans.values())
    start = began - st["elapsed"]

    def checkpoint(**where):
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise MinbertError(
                f"step {st['global_step']}: the weights are no longer finite, so no checkpoint is written; the run "
                f"diverged (lr {cfg.lr:g}): lower lr or set max_grad_norm; the last good checkpoint stays in {run}"
            )
        st.update(
            where,
            elapsed=time.time() - start,
            consumed={n: x.consumed for n, x in streams.items()},
            techniques=tech.state(),
        )
        tensors = tech.tensors()
        if d.world > 1:  # every rank's own dropout stream (all ranks take part in the gather)
            tensors.update({f"rng/rank{r}": t for r, t in enumerate(all_gather(torch.get_rng_state()))})
        if d.main:
            save_snapshot(run, "last", st["global_step"], model, optimizer, st, tensors)

    for epoch in range(st["epoch"], cfg.epochs + 1):
        plan = plans[epoch]
        model.train()
        bar = progress(
            range(st["step_in_epoch"], len(plan)),
            f"epoch {epoch}/{cfg.epochs}",
            unit="step",
            total=len(plan),
            initial=st["step_in_epoch"],
            disable=not d.main,
        )
        for s in bar:
            tech.lr_schedule.on_step(optimizer, st["global_step"], total_steps)
            # every process draws the same global batches; step_batches takes this one's share, in micro-batches
            idx = {name: streams[name].next() for name in plan[s]}
            micro = step_batches(train_data, idx, tok.pad_id, device, d.rank, d.world, cfg.grad_accum)
            losses = tech.train_step(optimizer, micro, st["global_step"])
            st["global_step"] += 1
            step = st["global_step"]
            if guard(st, losses, tech.skipped, step, cfg, run):  # False: a skipped update, its losses are not counted
                for name, loss in losses.items():
                    for acc in (st["window"][name], st["epoch_loss"][name]):
                        acc[0] += loss
                        acc[1] += 1
            # running loss per task this epoch, and (in brackets) how many of its batches: the task mix
            bar.set_postfix({n: f"{a / c:.3f} ({c})" for n, (a, c) in st["epoch_loss"].items() if c}, refresh=False)
            if step % cfg.log_every == 0:
                metrics.write(
                    {
                        "step": step,
                        "epoch": epoch,
                        **{f"train/loss/{n}": a / c for n, (a, c) in st["window"].items() if c},
                        **tech.take_log(),
                        **({"train/skipped_steps": st["skipped"]} if st.get("skipped") else {}),
                    }
                )
                st["window"] = {n: [0.0, 0] for n in cfg.tasks}
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and s + 1 < len(plan):
                checkpoint(step_in_epoch=s + 1, epoch=epoch)
            if step % TRIM_EVERY == 0:
                release_memory()
            # every rank stops at the same step: rank 0's clock decides
            if cfg.max_minutes and broadcast(time.time() - start > 60 * cfg.max_minutes):
                st["stopped"] = f"max_minutes {cfg.max_minutes:g} reached at step {step}"
                break
        bar.close()

        dev, dev_preds = evaluate(model, data["dev"], tok.pad_id, device, cfg.precision)
        release_memory()
        epoch_loss = {f"train/loss/{n}": a / c for n, (a, c) in st["epoch_loss"].items() if c}
        extra = tech.end_epoch(optimizer, epoch, sum(epoch_loss.values()), dev)
        metrics.write(
            {
                "step": st["global_step"],
                "epoch": epoch,
                "time": time.time() - start,
                **epoch_loss,
                **{f"dev/{k}": v for k, v in dev.items()},
                **extra,
            }
        )
        improved = dev["overall"] > st["best"]
        if d.main:
            print(
                f"epoch {epoch}/{cfg.epochs}  "
                + "  ".join(f"{k} {v:.4f}" for k, v in dev.items())
                + ("  (best)" if improved else "")
                + f"  {time.time() - start:.0f}s",
                flush=True,
            )
        if improved:
            st.update(best=dev["overall"], best_epoch=epoch)
            if d.main:
                save_snapshot(run, "best", st["global_step"], model, state={"epoch": epoch, "dev": dev})
                write_task_predictions(run / "predictions", "dev", data["dev"], dev_preds)  # the best epoch's, kept
        st["epoch_loss"] = {n: [0.0, 0] for n in cfg.tasks}
        if st.get("stopped"):  # the time budget ran out: this evaluation was the last
            log.warning("%s: training stops here", st["stopped"])
            checkpoint(epoch=cfg.epochs + 1, step_in_epoch=0)
            break
        checkpoint(epoch=epoch + 1, step_in_epoch=0)

    return finish(run, cfg, model, tok, data, device, start, steps=st["global_step"], stopped=st.get("stopped"))


def guard(st: dict, losses: dict[str, float], skipped: bool, step: int, cfg: TrainConfig, run: Path) -> bool:
    """The divergence guard, after each step: counts skipped (non-finite) updates and stops the run after
    `max_bad_steps` in a row, or when a task's loss exceeds `divergence_factor` times its running mean. Returns
    whether the step's losses count."""
    if skipped:
        st["bad_steps"] = st.get("bad_steps", 0) + 1
        st["skipped"] = st.get("skipped", 0) + 1
        bad = ", ".join(f"{n} {v:g}" for n, v in losses.items())
        log.warning("step %d: non-finite loss or gradient (%s); update skipped", step, bad)
        if cfg.max_bad_steps and st["bad_steps"] >= cfg.max_bad_steps:
            raise MinbertError(
                f"step {step}: the loss or gradient is not finite for {st['bad_steps']} steps in a row ({bad}): "
                f"the run diverged at lr {cfg.lr:g}; lower lr or set max_grad_norm (the last good checkpoint stays "
                f"in {run})"
            )
        return False
    if not all(math.isfinite(v) for v in losses.values()):
        return False  # fp16: the gradient scaler skipped an overflowing step itself and lowers its scale
    st["bad_steps"] = 0
    ema = st.setdefault("loss_ema", {})
    for n, v in losses.items():
        if cfg.divergence_factor and n in ema and v > 10 and v > cfg.divergence_factor * ema[n]:
            raise MinbertError(
                f"step {step}: task {n}'s loss is {v:.4g}, {v / ema[n]:.0f} times its running mean {ema[n]:.4g}: the "
                f"run diverged at lr {cfg.lr:g}; lower lr or set max_grad_norm (divergence_factor "
                f"{cfg.divergence_factor:g} decides; the last good checkpoint stays in {run})"
            )
        ema[n] = v if n not in ema else 0.98 * ema[n] + 0.02 * v
    return True


def finish(
    run: Path, cfg: TrainConfig, model, tok, data, device, start: float, steps: int, stopped: str | None = None
) -> dict:
    """Reload the best epoch, write its test predictions (its dev ones were written when it was evaluated), print
    and save the results."""
    barrier()  # rank 0 has written the best snapshot
    best = load_snapshot(run, "best", model)
    dev = best["dev"]
    _, preds = evaluate(model, data["test"], tok.pad_id, device, cfg.precision)
    wall = time.time() - start
    summary = {
        "run_dir": str(run),
        "best_epoch": best["epoch"],
        "dev": dev,
        "steps": steps,
        "wall_time_s": round(wall, 1),
    }
    if stopped:
        summary["stopped"] = stopped
    if not current().main:
        return summary
    write_task_predictions(run / "predictions", "test", data["test"], preds)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    print(results_table({f"dev (best epoch {best['epoch']})": dev}, list(cfg.tasks)))
    print(f"wall time {wall:.0f}s, {steps} steps; predictions in {run / 'predictions'}", flush=True)
    return summary


def load_run_config(run: Path, data_dir: str | None = None) -> TrainConfig:
    """A run's saved config; its data folder by the rule of `choose_data_dir` (`data_dir`: the --data-dir flag)."""
    if not (run / "config.yaml").is_file():
        raise MinbertError(f"{run}: no config.yaml; is this a minbert train run directory?")
    cfg = from_dict(TrainConfig, load_yaml(run / "config.yaml")).validate()
    return dataclasses.replace(cfg, data_dir=choose_data_dir(data_dir, cfg.data_dir))


def resume_config(run: Path, overrides: list[str], data_dir: str | None = None) -> TrainConfig:
    """A resumed run keeps its saved config; only where results go, and where its data is, may change."""
    if overrides:
        log.warning("ignoring overrides on --resume: a resumed run replays its saved config")
    return dataclasses.replace(load_run_config(run, data_dir), out=str(run))
