"""`minbert compare RUN_DIR...`: one markdown table (dev SST, Quora, STS, overall, wall time, steps) and a bar chart
of the same runs, from their summary.json files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from minbert.errors import MinbertError
from minbert.files import check_new_files, read_summary
from minbert.plot import plt, save_figure

COLUMNS = [
    ("sst/acc", "dev SST acc"),
    ("quora/acc", "dev Quora acc"),
    ("sts/pearson", "dev STS r"),
    ("overall", "overall"),
]


def load_summary(run: Path) -> dict:
    """summary.json, with its wall time and steps (shown as they are) checked as numbers."""
    path = run / "summary.json"
    if not path.is_file():
        raise MinbertError(f"{run}: no summary.json; has this run finished (minbert train or minbert ensemble)?")
    s = read_summary(run)
    for key, kind, what in (("wall_time_s", (int, float), "a number of seconds"), ("steps", int, "a whole number")):
        v = s.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind)):
            raise MinbertError(f"{path}: {key!r} must be {what} or null, got {json.dumps(v)[:40]}; restore the file")
    return s


def labels(runs: list[Path]) -> list[str]:
    """Each run's name: its folder's name, with as many parent folders as tell it from the others (a sweep's
    base/seed1 and lora/seed1, not seed1 twice)."""
    parts = [Path(os.path.abspath(r)).parts for r in runs]
    out = []
    for i, p in enumerate(parts):
        others = [q for j, q in enumerate(parts) if j != i and q != p]  # the same run given twice is one name
        k = next((k for k in range(1, len(p)) if all(q[-k:] != p[-k:] for q in others)), len(p))
        out.append(str(Path(*p[-k:])))
    return out


def check_chart(chart: Path, overwrite: bool) -> None:
    """Before any work: the chart is a new .png file (or --overwrite replaces one)."""
    if chart.suffix.lower() != ".png":
        raise MinbertError(f"--chart {chart}: the chart is a PNG picture; name a .png file")
    check_new_files([chart], overwrite, "another --chart")


def compare(runs: list[Path], chart: Path | None = None, overwrite: bool = False) -> str:
    """The markdown table of the runs; with `chart`, also the bar chart there (refused over an existing file
    without `overwrite`)."""
    if chart is not None:
        check_chart(chart, overwrite)
    rows = list(zip(labels(runs), [load_summary(r) for r in runs]))
    lines = [
        "| run | " + " | ".join(title for _, title in COLUMNS) + " | wall time | steps |",
        "|---|" + "---|" * (len(COLUMNS) + 2),
    ]
    for name, s in rows:
        cells = [f"{s['dev'][k]:.4f}" if k in s.get("dev", {}) else "-" for k, _ in COLUMNS]
        wall = f"{s['wall_time_s'] / 60:.1f} min" if s.get("wall_time_s") is not None else "-"
        steps = s["steps"] if s.get("steps") is not None else "-"  # an ensemble has none
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall} | {steps} |")
    if chart is not None:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
        width = 0.8 / len(COLUMNS)
        x = np.arange(len(rows))
        for i, (key, title) in enumerate(COLUMNS):
            ax.bar(x + i * width, [s["dev"].get(key, 0) for _, s in rows], width, label=title)
        ax.set_xticks(x + width * (len(COLUMNS) - 1) / 2)
        ax.set_xticklabels([n for n, _ in rows], rotation=20, ha="right")
        ax.set(ylabel="dev metric", ylim=(0, 1), title="minbert compare")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        save_figure(fig, chart)
    return "\n".join(lines)
