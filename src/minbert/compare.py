"""`minbert compare RUN_DIR...`: one markdown table (dev SST, Quora, STS, overall, wall time, steps) and a bar chart
of the same runs, from their summary.json files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minbert.errors import MinbertError
from minbert.files import read_summary
from minbert.plot import plt, save_figure

COLUMNS = [
    ("sst/acc", "dev SST acc"),
    ("quora/acc", "dev Quora acc"),
    ("sts/pearson", "dev STS r"),
    ("overall", "overall"),
]


def load_summary(run: Path) -> dict:
    path = run / "summary.json"
    if not path.is_file():
        raise MinbertError(f"{run}: no summary.json; has this run finished (minbert train or minbert ensemble)?")
    return read_summary(run)


def compare(runs: list[Path], chart: Path | None = None) -> str:
    rows = [(r.name, load_summary(r)) for r in runs]
    lines = [
        "| run | " + " | ".join(title for _, title in COLUMNS) + " | wall time | steps |",
        "|---|" + "---|" * (len(COLUMNS) + 2),
    ]
    for name, s in rows:
        cells = [f"{s['dev'][k]:.4f}" if k in s.get("dev", {}) else "-" for k, _ in COLUMNS]
        wall = f"{s['wall_time_s'] / 60:.1f} min" if s.get("wall_time_s") is not None else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall} | {s.get('steps', '-')} |")
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
