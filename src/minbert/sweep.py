"""`minbert sweep SWEEP.yaml`: one base config, a set of variants (named override lists, or a grid of values) and
a list of seeds -> one `minbert train` run per (variant, seed), one after another, then a table of mean +- std
over seeds per variant (markdown and CSV) and a chart.

    base: configs/best.yaml          # a train config (path relative to the sweep file, else to the working dir)
    budget: false                    # true: apply the base config's budget section
    overrides: [epochs=2]            # applied to every run
    variants:                        # named override lists; the first is the baseline the others are compared to
      baseline: []
      pcgrad: [combiner=pcgrad]
    grid:                            # or (and) a grid: every combination of these values becomes a variant
      lr: [5.0e-5, 8.0e-5]
    seeds: [1, 2, 3]
    out: runs/sweeps/example         # run directories: OUT/<variant>/seed<k>

Resumable: a run with a summary.json is done and skipped, one with a checkpoint is resumed (`train --resume`), any
other leftover folder is started again. Each run is its own process, so a crash or kill loses at most that run's
progress since its last checkpoint. Equal-time budgets: put `max_minutes=N` in `overrides`.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minbert.config import load_yaml
from minbert.errors import MinbertError

METRICS = [("sst/acc", "SST acc"), ("quora/acc", "Quora acc"), ("sts/pearson", "STS r"), ("overall", "overall")]
KEYS = {"base", "budget", "overrides", "variants", "grid", "seeds", "out"}


@dataclass(frozen=True)
class Sweep:
    base: Path
    out: Path
    seeds: tuple[int, ...]
    variants: dict[str, tuple[str, ...]]  # name -> overrides (after the sweep-wide ones)
    budget: bool = False
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def runs(self):
        """(variant, seed, run directory, train arguments) in the order they run: seed by seed, so a partial sweep
        already has every variant at its first seeds."""
        for seed in self.seeds:
            for name, extra in self.variants.items():
                run = self.out / name / f"seed{seed}"
                args = [str(self.base), *(["--budget"] if self.budget else []), *self.overrides, *extra, f"seed={seed}", f"out={run}"]
                yield name, seed, run, args


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    raw = load_yaml(path)
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise MinbertError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(KEYS))}")
    if "base" not in raw:
        raise MinbertError(f"{path}: 'base' missing: name the train config every run starts from")
    base = Path(raw["base"])
    if not base.is_absolute() and not base.is_file() and (path.parent / base).is_file():
        base = path.parent / base
    if not base.is_file():
        raise MinbertError(f"{path}: base {raw['base']!r} not found (relative to {path.parent} or the working directory)")
    variants: dict[str, tuple[str, ...]] = {}
    for name, extra in (raw.get("variants") or {}).items():
        if not isinstance(extra, list):
            raise MinbertError(f"{path}: variants.{name} must be a list of key=value overrides")
        if not str(name) or any(c in str(name) for c in "/ \\"):
            raise MinbertError(f"{path}: variant name {name!r} names a folder: no spaces or slashes")
        variants[str(name)] = tuple(str(x) for x in extra)
    grid = raw.get("grid") or {}
    if grid:
        if not all(isinstance(v, list) and v for v in grid.values()):
            raise MinbertError(f"{path}: every grid key needs a non-empty list of values")
        for combo in itertools.product(*grid.values()):
            extra = tuple(f"{k}={v}" for k, v in zip(grid, combo))
            variants[",".join(extra)] = extra
    if not variants:
        variants = {"base": ()}
    seeds = raw.get("seeds") or [11711]
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise MinbertError(f"{path}: seeds must be a list of integers")
    out = Path(raw.get("out") or f"runs/sweeps/{path.stem}")
    sweep = Sweep(base, out, tuple(seeds), variants, bool(raw.get("budget", False)), tuple(str(x) for x in raw.get("overrides") or []))
    check(sweep)
    return sweep


def check(sweep: Sweep) -> None:
    """Every run's config must load and validate before the first run starts."""
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig

    for name, _, _, args in sweep.runs():
        overrides = [a for a in args[1:] if a != "--budget"]
        try:
            load_config(TrainConfig, args[0], overrides, budget=sweep.budget).validate()
        except MinbertError as e:
            raise MinbertError(f"variant {name}: {e}") from None


def state(run: Path) -> str:
    if (run / "summary.json").is_file():
        return "done"
    if (run / "last.json").is_file():
        return "resume"
    return "new"


def run_sweep(sweep: Sweep, dry_run: bool = False) -> str:
    todo = list(sweep.runs())
    for i, (name, seed, run, args) in enumerate(todo, 1):
        kind = state(run)
        cmd = [sys.executable, "-m", "minbert", "train", *(["--resume", str(run)] if kind == "resume" else args)]
        print(f"[{i}/{len(todo)}] {name} seed {seed}: {kind}" + ("" if kind == "done" else "  " + " ".join(cmd[3:])), flush=True)
        if kind == "done" or dry_run:
            continue
        if kind == "new" and run.exists():
            shutil.rmtree(run)  # a start that died before its first checkpoint
        done = subprocess.run(cmd)
        if done.returncode:
            raise MinbertError(f"{run}: minbert train exited with {done.returncode}; fix it and run the sweep again (finished runs are kept)")
        report(sweep)  # the table so far, after every run
    return "" if dry_run else report(sweep)


@dataclass
class Row:
    name: str
    n: int
    mean: dict[str, float]
    std: dict[str, float]


def rows(sweep: Sweep) -> list[Row]:
    out = []
    for name in sweep.variants:
        summaries = [json.loads((r / "summary.json").read_text()) for n, _, r, _ in sweep.runs() if n == name and (r / "summary.json").is_file()]
        if not summaries:
            continue
        values = {k: [s["dev"][k] for s in summaries if k in s["dev"]] for k, _ in METRICS}
        values["wall_time_s"] = [s["wall_time_s"] for s in summaries]
        values["steps"] = [s["steps"] for s in summaries]
        mean = {k: float(np.mean(v)) for k, v in values.items() if v}
        std = {k: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for k, v in values.items() if v}
        out.append(Row(name, len(summaries), mean, std))
    return out


def report(sweep: Sweep) -> str:
    """Writes OUT/results.md, OUT/results.csv, OUT/results.png; returns the markdown table."""
    table = rows(sweep)
    if not table:
        raise MinbertError(f"{sweep.out}: no finished runs yet")
    present = [(k, t) for k, t in METRICS if any(k in r.mean for r in table)]
    base = table[0]
    lines = ["| variant | n | " + " | ".join(t for _, t in present) + " | Δ overall vs " + base.name + " | wall time | steps |",
             "|---|---|" + "---|" * (len(present) + 3)]
    for r in table:
        cells = [fmt(r.mean.get(k), r.std.get(k)) for k, _ in present]
        lines.append(f"| {r.name} | {r.n} | " + " | ".join(cells) + f" | {delta(r, base)} | "
                     f"{r.mean['wall_time_s'] / 60:.1f} min | {r.mean['steps']:.0f} |")
    lines.append("")
    lines.append("mean ± sample std over seeds; Δ: difference of means ± its standard error, * where it exceeds twice the "
                 "standard error (beyond seed noise at this n).")
    md = "\n".join(lines)
    sweep.out.mkdir(parents=True, exist_ok=True)
    (sweep.out / "results.md").write_text(md + "\n")
    with open(sweep.out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "n"] + [c for k, _ in present for c in (f"{k} mean", f"{k} std")] + ["wall_time_s mean", "steps mean"])
        for r in table:
            w.writerow([r.name, r.n] + [x for k, _ in present for x in (r.mean.get(k), r.std.get(k))] + [r.mean["wall_time_s"], r.mean["steps"]])
    chart(table, present, sweep.out / "results.png")
    return md


def fmt(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def delta(r: Row, base: Row) -> str:
    if r is base:
        return "-"
    d = r.mean["overall"] - base.mean["overall"]
    if r.n < 2 or base.n < 2:
        return f"{d:+.4f}"
    se = math.sqrt(r.std["overall"] ** 2 / r.n + base.std["overall"] ** 2 / base.n)
    return f"{d:+.4f} ± {se:.4f}" + (" *" if abs(d) > 2 * se else "")


def chart(table: list[Row], present, path: Path) -> None:
    from minbert.plot import plt, save_figure

    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 0.35 * len(table) + 1.8), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(table))
    for ax, (k, title) in zip(axes, present):
        means = [r.mean.get(k, np.nan) for r in table]
        stds = [0 if math.isnan(r.std.get(k, np.nan)) else r.std[k] for r in table]
        ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.7, capsize=3)
        lo = np.nanmin(np.array(means) - np.array(stds))
        hi = np.nanmax(np.array(means) + np.array(stds))
        ax.set_xlim(lo - 0.15 * (hi - lo + 1e-3), hi + 0.15 * (hi - lo + 1e-3))
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([f"{r.name} (n={r.n})" for r in table], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("dev metrics, mean ± std over seeds", fontsize=10)
    save_figure(fig, path)
