"""`minbert ensemble RUN_DIR... --out DIR [--min sst=0.53 quora=0.88 sts=0.87]` (report 001's final system).

For each task, average the soft outputs (class probabilities, paraphrase probabilities, similarity scores) of the
runs' best checkpoints on dev and test; with `--min`, a run joins a task's average only if its own dev metric for
that task reached the threshold, so one run may serve some tasks and not others. Thresholds are on each task's own
metric: accuracy for SST and Quora, Pearson r for STS (report 001 put STS on the (r + 1) / 2 scale of the overall
score: its threshold t is r >= 2 t - 1 here). Writes dev metrics, summary.json and prediction files like a single run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from minbert.errors import MinbertError
from minbert.files import atomic_write_text, check_output, read_summary, staged
from minbert.multitask.evaluate import results_table, write_task_predictions
from minbert.multitask.run import load_data, load_run, load_run_config
from minbert.tasks import overall_score

log = logging.getLogger(__name__)


def ensemble(
    runs: list[Path],
    out: Path,
    thresholds: dict[str, float] | None = None,
    data_dir: str | None = None,
    overwrite: bool = False,
) -> dict:
    """`data_dir`: the --data-dir flag (see minbert.data.choose_data_dir). `out` must be new or empty (or
    `overwrite`), and not one of the runs; it gets all its files at the end or none."""
    thresholds = thresholds or {}
    if any(Path(out).resolve() == Path(r).resolve() for r in runs):
        raise MinbertError(f"--out {out}: is one of the runs; the ensemble goes into a folder of its own")
    check_output(Path(out), overwrite, "ensemble")
    configs = {run: load_run_config(run, data_dir) for run in runs}
    specs = {n: s for cfg in configs.values() for n, s in cfg.specs.items()}  # the runs' tasks, custom ones too
    unknown = sorted(set(thresholds) - set(specs))
    if unknown:
        raise MinbertError(f"--min {', '.join(unknown)}: unknown task; valid: {', '.join(specs)}")
    start = time.time()
    soft: dict[str, dict[str, list[torch.Tensor]]] = {"dev": {}, "test": {}}
    members: dict[str, list[str]] = {}
    data_of: dict[str, dict] = {}  # split -> task -> TaskData (ids and labels)
    every: set[str] = set()  # the tasks the runs were trained on
    for run, cfg in configs.items():
        every.update(cfg.tasks)
        dev_metrics = read_summary(run).get("dev", {}) if (run / "summary.json").is_file() else {}
        wanted = [
            t for t in cfg.tasks if dev_metrics.get(f"{t}/{specs[t].metric_name}", -1.0) >= thresholds.get(t, -1.0)
        ]
        if not wanted:
            continue
        r = load_run(run, cfg=cfg)  # every head, so the checkpoint loads whole; only `wanted` are evaluated
        runner = r.runner
        data = load_data(cfg.restricted_to(wanted), r.tok, ("dev", "test"))
        for split, tasks in data.items():
            for t, d in tasks.items():
                known = data_of.setdefault(split, {}).setdefault(t, d)
                if [e.id for e in known.examples] != [e.id for e in d.examples]:
                    raise MinbertError(f"{run}: its {t} {split} examples differ from the other runs' (eval limits?)")
                soft[split].setdefault(t, []).append(runner.soft(t, d))
        for t in wanted:
            members.setdefault(t, []).append(str(run))
        del r, runner
    if not members:
        raise MinbertError(f"no run passed the thresholds {thresholds}; lower --min or add runs")
    for t in sorted(t for t in thresholds if t in every and t not in members):  # said, not silent
        log.warning("--min %s=%g: no run reaches it; the ensemble leaves %s out", t, thresholds[t], t)

    metrics, preds = _average(soft, data_of, specs)
    if set(members) == every:  # the overall score only when no task was left out by the thresholds
        metrics["overall"] = overall_score(metrics, {t: specs[t] for t in members})
    with staged(out) as tmp:  # all files or none
        for split in ("dev", "test"):
            write_task_predictions(tmp / "predictions", split, data_of.get(split, {}), preds[split], specs)
        summary = _summary(out, metrics, members, thresholds, start)
        atomic_write_text(tmp / "summary.json", json.dumps(summary, indent=2))
    print(results_table({f"ensemble of {len(runs)} runs": metrics}, {t: specs[t] for t in members}))
    for t, names in members.items():
        print(f"{t}: {len(names)} run(s): {', '.join(names)}")
    return summary


def _summary(out: Path, metrics: dict, members: dict, thresholds: dict, start: float) -> dict:
    return {
        "run_dir": str(out),
        "dev": metrics,
        "members": members,
        "thresholds": thresholds,
        "wall_time_s": round(time.time() - start, 1),
        "steps": None,
    }


def _average(soft: dict, data_of: dict, specs: dict) -> tuple[dict[str, float], dict[str, dict]]:
    """Members' soft outputs -> the ensemble's predictions per split and task, and its dev metrics."""
    metrics, preds = {}, {"dev": {}, "test": {}}
    for split in ("dev", "test"):
        for t, parts in soft[split].items():
            preds[split][t] = specs[t].hard(torch.stack(parts).mean(0))
            if split == "dev":
                metrics[f"{t}/{specs[t].metric_name}"] = specs[t].metric(preds[split][t], data_of["dev"][t].labels)
    return metrics, preds
