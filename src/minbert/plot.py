"""Figures a person opens, drawn from a run's metrics.jsonl alone (no model needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

from minbert.errors import MinbertError  # noqa: E402
from minbert.files import read_metrics  # noqa: E402

PLOTS = ("loss_per_task.png", "dev_metrics.png", "task_weights.png")  # what `minbert plot` writes into RUN/plots


def plot_files(run: Path) -> list[Path]:
    return [run / "plots" / name for name in PLOTS]


def plot_run(run: Path) -> list[Path]:
    """RUN/plots/loss_per_task.png, dev_metrics.png (and task_weights.png under a loss weighting) from
    RUN/metrics.jsonl (checked: each record's step a whole number, its values numbers); an existing picture is
    replaced (`minbert plot` refuses one without --overwrite)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise MinbertError(f"{path}: no such metrics log; give a run folder of `minbert train`")
    records = read_metrics(path)
    if not records:
        raise MinbertError(f"{path}: no records to plot; a run logs its first after log_every steps")
    steps = [r for r in records if "dev/overall" not in r and any(k.startswith("train/loss/") for k in r)]
    evals = [r for r in records if any(k.startswith("dev/") for k in r)]
    weighted = [r for r in steps if any(k.startswith("weight/") for k in r)]  # a loss weighting's (uw, dwa, ...)
    figures = [
        (steps, "train/loss/", "step", "training loss", "loss per task", "loss_per_task.png", {}),
        (weighted, "weight/", "step", "loss weight", "task weights", "task_weights.png", {}),
        (evals, "dev/", "epoch", "dev metric", "dev metrics per epoch", "dev_metrics.png", {"marker": "o"}),
    ]
    here = run.resolve()
    label = f"{here.parent.name}/{here.name}" if here.name.startswith("seed") else here.name  # a sweep's VARIANT/seedK
    written = []
    for rows, prefix, x, ylabel, title, name, style in figures:
        if rows:
            written.append(curves(rows, prefix, x, ylabel, f"{title}: {label}", run / "plots" / name, style))
    return written


def curves(rows: list[dict], prefix: str, x: str, ylabel: str, title: str, path: Path, style: dict) -> Path:
    """One line per logged key under `prefix` (its name the label), against the records' `x`, saved to `path`."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in sorted({k for r in rows for k in r if k.startswith(prefix)}):
        pts = [(r[x], as_point(r[key])) for r in rows if key in r]
        ax.plot(*zip(*pts), label=key.removeprefix(prefix), **style)
    ax.set(xlabel=x, ylabel=ylabel, title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def as_point(v) -> float:
    """A logged value as a point: null (nothing measured) is a gap in the line."""
    return float("nan") if v is None else v


def save_figure(fig, path: Path) -> Path:
    """A PNG written whole or not at all (a temporary file renamed): a full disk leaves the old picture, if any."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path
