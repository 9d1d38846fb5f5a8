"""Evaluation's outputs: CS224N prediction files and the results table (the passes themselves: multitask/runner.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from minbert.data import write_predictions
from minbert.multitask.data import TaskData
from minbert.tasks import Task


def write_task_predictions(
    folder: Path,
    split: str,
    data: dict[str, TaskData],
    preds: dict[str, torch.Tensor],
    specs: dict[str, Task],
    names: str = "{prefix}-{split}-output.csv",
) -> list[Path]:
    """CS224N prediction files; `names` (TrainConfig.prediction_files) from the task's file prefix, name and split;
    `specs` the tasks' definitions (TrainConfig.specs)."""
    paths = []
    for task, p in preds.items():
        spec = specs[task]
        if spec.regression:
            values = [f"{x:.4f}" for x in p.tolist()]
        elif spec.dataset.written_names:
            values = [spec.dataset.written_names[int(x)] for x in p.tolist()]
        else:
            values = [int(x) for x in p.tolist()]
        path = folder / names.format(prefix=spec.prefix, task=task, split=split)
        write_predictions(path, spec.dataset.prediction_header, [e.id for e in data[task].examples], values)
        paths.append(path)
    return paths


def results_table(rows: dict[str, dict[str, float]], specs: dict[str, Task]) -> str:
    """Markdown table, one row per split/run: each task's metric (`specs`: the tasks, in column order) and the
    overall score."""
    cols = [f"{t}/{s.metric_name}" for t, s in specs.items()] + ["overall"]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" if c in m else "-" for c in cols) + " |")
    return "\n".join(lines)
