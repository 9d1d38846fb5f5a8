"""The multitask training loop: one shared encoder, a schedule of task batches, summed losses, AdamW, evaluation on
every dev set after each epoch, the best epoch kept by overall score, resumable at any checkpoint.

    minbert train configs/quickstart.yaml [key.sub=value ...]
    minbert train --resume runs/quickstart-...
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path


from minbert.config import dump_yaml, from_dict, load_yaml
from minbert.data import Tokenizer, data_dir, load_split, split_file
from minbert.model import BertModel, resolve_checkpoint
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, TaskData, encode_task, make_batch
from minbert.multitask.evaluate import evaluate, results_table, write_task_predictions
from minbert.multitask.model import MultitaskModel
from minbert.multitask.state import load_snapshot, save_snapshot
from minbert.multitask.techniques import Techniques
from minbert.optim import AdamW
from minbert.runs import MetricsLog, new_run_dir, pick_device, progress, seed_everything
from minbert.schedules import SCHEDULES
from minbert.tasks import TASKS

log = logging.getLogger(__name__)


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
    model = MultitaskModel(BertModel.from_pretrained(ckpt), {n: cfg.task(n) for n in cfg.tasks}, cfg.pals)
    return model.to(device), Tokenizer.from_pretrained(ckpt)


def train(cfg: TrainConfig, resume: Path | None = None) -> dict:
    cfg = cfg.validate()
    began = time.time()  # wall time counts loading and prediction too, and adds up across resumed sessions
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model, tok = build(cfg, device)
    data = load_data(cfg, tok)
    optimizer = AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tech = Techniques(cfg, model, device)

    run = resume or (Path(cfg.out) if cfg.out else new_run_dir("runs", cfg.name))
    run.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(run / "metrics.jsonl")
    st = {"epoch": 1, "step_in_epoch": 0, "global_step": 0, "best": -1.0, "best_epoch": 0, "elapsed": 0.0,
          "consumed": {n: 0 for n in cfg.tasks}, "epoch_loss": {n: [0.0, 0] for n in cfg.tasks},
          "window": {n: [0.0, 0] for n in cfg.tasks}}  # loss sums and counts: this epoch's, and since the last log
    if resume:
        tensors: dict = {}
        st = load_snapshot(run, "last", model, optimizer, tensors)
        tech.load_state(st["techniques"])
        tech.load_tensors(tensors)
        metrics.truncate_after(st["global_step"])  # records written after the checkpoint are replayed
        log.info("resuming %s at epoch %d, step %d", run, st["epoch"], st["global_step"])
    else:
        dump_yaml(cfg, run / "config.yaml")
    log.info("run directory: %s", run)

    train_data = data["train"]
    sizes = {n: len(d) for n, d in train_data.items()}
    per_pass = {n: -(-sizes[n] // cfg.task(n).batch_size) for n in cfg.tasks}
    streams = {n: BatchStream(n, d.lengths, cfg.task(n).batch_size, cfg.seed, st["consumed"][n]) for n, d in train_data.items()}
    plans = {e: SCHEDULES[cfg.schedule](sizes, per_pass, e, cfg.epochs, cfg.steps_per_epoch, cfg.seed) for e in range(1, cfg.epochs + 1)}
    total_steps = sum(len(p) for p in plans.values())
    start = began - st["elapsed"]

    def checkpoint(**where):
        st.update(where, elapsed=time.time() - start, consumed={n: x.consumed for n, x in streams.items()}, techniques=tech.state())
        save_snapshot(run, "last", st["global_step"], model, optimizer, st, tech.tensors())

    for epoch in range(st["epoch"], cfg.epochs + 1):
        plan = plans[epoch]
        model.train()
        bar = progress(range(st["step_in_epoch"], len(plan)), f"epoch {epoch}/{cfg.epochs}", unit="step", total=len(plan), initial=st["step_in_epoch"])
        for s in bar:
            tech.lr_schedule.on_step(optimizer, st["global_step"], total_steps)
            batches = {name: make_batch(train_data[name], streams[name].next(), tok.pad_id).to(device) for name in plan[s]}
            for name, loss in tech.train_step(optimizer, batches, st["global_step"]).items():
                for acc in (st["window"][name], st["epoch_loss"][name]):
                    acc[0] += loss
                    acc[1] += 1
            st["global_step"] += 1
            step = st["global_step"]
            # running loss per task this epoch, and (in brackets) how many of its batches: the task mix
            bar.set_postfix({n: f"{a / c:.3f} ({c})" for n, (a, c) in st["epoch_loss"].items() if c}, refresh=False)
            if step % cfg.log_every == 0:
                metrics.write({"step": step, "epoch": epoch, **{f"train/loss/{n}": a / c for n, (a, c) in st["window"].items() if c}})
                st["window"] = {n: [0.0, 0] for n in cfg.tasks}
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and s + 1 < len(plan):
                checkpoint(step_in_epoch=s + 1, epoch=epoch)
        bar.close()

        dev, dev_preds = evaluate(model, data["dev"], tok.pad_id, device, cfg.bf16)
        epoch_loss = {f"train/loss/{n}": a / c for n, (a, c) in st["epoch_loss"].items() if c}
        extra = tech.end_epoch(optimizer, epoch, sum(epoch_loss.values()), dev)
        metrics.write({"step": st["global_step"], "epoch": epoch, "time": time.time() - start, **epoch_loss, **{f"dev/{k}": v for k, v in dev.items()}, **extra})
        improved = dev["overall"] > st["best"]
        print(f"epoch {epoch}/{cfg.epochs}  " + "  ".join(f"{k} {v:.4f}" for k, v in dev.items()) + ("  (best)" if improved else "") + f"  {time.time() - start:.0f}s", flush=True)
        if improved:
            st.update(best=dev["overall"], best_epoch=epoch)
            save_snapshot(run, "best", st["global_step"], model, state={"epoch": epoch, "dev": dev})
            write_task_predictions(run / "predictions", "dev", data["dev"], dev_preds)  # the best epoch's, kept
        st["epoch_loss"] = {n: [0.0, 0] for n in cfg.tasks}
        checkpoint(epoch=epoch + 1, step_in_epoch=0)

    return finish(run, cfg, model, tok, data, device, start, steps=st["global_step"])


def finish(run: Path, cfg: TrainConfig, model, tok, data, device, start: float, steps: int) -> dict:
    """Reload the best epoch, write its test predictions (its dev ones were written when it was evaluated), print
    and save the results."""
    best = load_snapshot(run, "best", model)
    dev = best["dev"]
    _, preds = evaluate(model, data["test"], tok.pad_id, device, cfg.bf16)
    write_task_predictions(run / "predictions", "test", data["test"], preds)
    wall = time.time() - start
    summary = {"run_dir": str(run), "best_epoch": best["epoch"], "dev": dev, "steps": steps, "wall_time_s": round(wall, 1)}
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    print(results_table({f"dev (best epoch {best['epoch']})": dev}, list(cfg.tasks)))
    print(f"wall time {wall:.0f}s, {steps} steps; predictions in {run / 'predictions'}", flush=True)
    return summary


def load_run_config(run: Path) -> TrainConfig:
    return from_dict(TrainConfig, load_yaml(run / "config.yaml")).validate()


def resume_config(run: Path, overrides: list[str]) -> TrainConfig:
    """A resumed run keeps its saved config; only where results go may not change."""
    if overrides:
        log.warning("ignoring overrides on --resume: a resumed run replays its saved config")
    return dataclasses.replace(load_run_config(run), out=str(run))
