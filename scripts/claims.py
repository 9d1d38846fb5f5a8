"""The reports' claims against the claims study's runs: one markdown table, docs/REPORTS.md's.

    python scripts/claims.py --budget 1000 precision=bf16 threads=1 [--seeds 1 2 3] [--gradvac | --rankings]
        [--record DIR] [--update FILE]

Run it where the study ran (its runs/reports/NNN-STEPSsteps folders, see scripts/report-study.sh), or, with `--record
DIR`, on the study's record (docs/study/reports/record: each finished run's config.yaml, summary.json and
metrics.jsonl, as `minbert sweep --record` keeps them; run folders do not outlive their machine). Each claim of
docs/study/reports/claims.yaml compares two rows A and B of a report's sweep on one dev metric. Per row: the mean and
sample std over the seeds that finished; the difference d = mean(B) - mean(A) and its standard error
se = sqrt(sd_A^2 / n_A + sd_B^2 / n_B), as `minbert sweep`'s table computes them. The verdict, once both rows have
every seed asked for (before that, the numbers so far and no verdict):

- expect higher / lower (s = +1 / -1): **agrees** where s d > 2 se; **disagrees** where s d < -2 se (the other
  way, beyond noise); where |d| <= 2 se, **no difference here** - a disagreement when the claim is `large` (the
  report found a large difference and we find none).
- expect same (the report calls the difference small): **agrees** where |d| <= 2 se, else **disagrees**.
- **cannot be tested at this budget** where the metric is an accuracy and both rows sit within 0.002 of the dev
  set's majority-class share (the task was not learned on either side: nothing to compare).

Claim 11 of docs/REPORTS.md (report 003's GradVac counts) is not a comparison of two rows: `--gradvac` prints its
numbers, per epoch, from the gradvac and naive rows' metrics. `--rankings`: each report's headline ranking, the
published order of its rows against ours, with Kendall's tau.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from minbert.config import load_yaml
from minbert.errors import MinbertError
from minbert.files import read_metrics, read_summary
from minbert.sweep import kept_at, load_sweep, published_overall, rank

EXPECT = {"higher": 1, "lower": -1, "same": 0}
TITLES = {"sst/acc": "SST acc", "quora/acc": "Quora acc", "sts/pearson": "STS r", "overall": "overall"}
TASK_METRICS = ("sst/acc", "quora/acc", "sts/pearson")
MAJORITY = {"sst/acc": ("ids-sst-dev.csv", "sentiment"), "quora/acc": ("quora-dev-from-dev.csv", "is_duplicate")}
FLOOR_TOLERANCE = 0.002


def majority_share(data_dir: Path, metric: str) -> float | None:
    """The share of the most common label in the metric's dev file (what always guessing it scores); None where
    the metric is not an accuracy or the file is absent."""
    if metric not in MAJORITY or not (data_dir / MAJORITY[metric][0]).is_file():
        return None
    name, column = MAJORITY[metric]
    with open(data_dir / name, newline="", encoding="utf-8") as f:
        labels = [r[column] for r in csv.DictReader(f, delimiter="\t") if r.get(column) not in (None, "")]
    return Counter(labels).most_common(1)[0][1] / len(labels)


RECORD: Path | None = None  # --record: where the runs' summary.json and metrics.jsonl are read instead


def kept(run: Path) -> Path:
    """Where a run's files are read: the run folder, or its copy in the record (--record)."""
    return run if RECORD is None else kept_at(RECORD, run)


@functools.cache
def _sweep(sweep_file: Path, budget: int | None, seeds: tuple[int, ...], extra: tuple[str, ...]):
    return load_sweep(sweep_file, steps=budget, seeds=list(seeds), extra=list(extra))  # all rows: a stage's source too


def values(sweep_file: Path, budget: int | None, seeds: list[int], row: str, metric: str, extra=()) -> list[float]:
    """The metric of each finished seed of one row (`extra`: the study's key=value overrides)."""
    sweep = _sweep(sweep_file, budget, tuple(seeds), tuple(extra))
    return [
        read_summary(kept(run))["dev"][metric]
        for name, _, run, _ in sweep.runs()
        if name == row and (kept(run) / "summary.json").is_file()
    ]


def verdict(a: list[float], b: list[float], expect: str, large: bool, seeds: int, floor: float | None) -> str:
    """The claim's verdict from the seeds' values of rows A and B (module docstring)."""
    if len(a) < seeds or len(b) < seeds:
        return f"pending ({len(a)} and {len(b)} of {seeds} seeds)"
    if floor is not None and all(abs(np.mean(x) - floor) <= FLOOR_TOLERANCE for x in (a, b)):
        return f"cannot be tested at this budget (both at the majority class, {floor:.4f})"
    d, se = difference(a, b)
    s = EXPECT[expect]
    if s == 0:
        return "agrees (no difference here)" if abs(d) <= 2 * se else "disagrees (a difference beyond noise)"
    if s * d > 2 * se:
        return "agrees"
    if s * d < -2 * se:
        return "disagrees (the other way, beyond noise)"
    return "disagrees (no difference here)" if large else "no difference here"


def difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(b) - mean(a) and its standard error (nan with fewer than two seeds on a side)."""
    d = float(np.mean(b) - np.mean(a))
    if len(a) < 2 or len(b) < 2:
        return d, float("nan")
    return d, math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))


def cell(x: list[float]) -> str:
    if not x:
        return "-"
    return f"{np.mean(x):.4f}" if len(x) < 2 else f"{np.mean(x):.4f} ± {np.std(x, ddof=1):.4f}"


def table(claims: list[dict], budget: int | None, seeds: list[int], data_dir: Path, extra=()) -> str:
    lines = [
        "| # | report | claim (published) | A -> B, metric | A | B | B - A | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        sweep_file = Path("configs/reports") / f"{c['report']}.yaml"
        a, b = (values(sweep_file, budget, seeds, row, c["metric"], extra) for row in c["rows"])
        d, se = difference(a, b) if a and b else (float("nan"), float("nan"))
        delta = "-" if math.isnan(d) else f"{d:+.4f}" + ("" if math.isnan(se) else f" ± {se:.4f}")
        if not math.isnan(se) and abs(d) > 2 * se:
            delta += " *"
        v = verdict(a, b, c["expect"], c.get("large", False), len(seeds), majority_share(data_dir, c["metric"]))
        lines.append(
            f"| {c['id']} | {c['report']} {c['where']} | {c['claim']} ({c['published']}) | "
            f"{c['rows'][0]} -> {c['rows'][1]}, {TITLES[c['metric']]} | {cell(a)} (n={len(a)}) | "
            f"{cell(b)} (n={len(b)}) | {delta} | {v} |"
        )
    lines.append("")
    lines.append(
        "A, B: mean ± sample std over the seeds that finished; B - A: difference of means ± its standard error\n"
        "(* beyond twice it). Verdict rules: scripts/claims.py."
    )
    return "\n".join(lines)


def gradvac_counts(budget: int | None, seeds: list[int], extra=()) -> str:
    """Report 003's section 6.3 in our runs: per epoch, the task-gradient rows GradVac altered (out of all rows)
    and its fixes (out of the pair checks) in the gradvac row, and the steps with a negative cosine (out of the
    pairs compared) in the naive row's conflict statistics; summed over seeds and task pairs."""
    out = ["| epoch | rows altered / rows (gradvac) | fixes / checks (gradvac) | negative cosines / pairs (naive) |"]
    out.append("|---|---|---|---|")
    per_epoch: dict[int, Counter] = {}
    runs = Counter()
    for row, keys in (("gradvac", ("altered", "rows", "fixes", "checks")), ("naive", ("negative", "pairs"))):
        sweep = _sweep(Path("configs/reports/003.yaml"), budget, tuple(seeds), tuple(extra))
        for name, _, run, _ in sweep.runs():
            if name != row or not (kept(run) / "summary.json").is_file():
                continue
            if not (kept(run) / "metrics.jsonl").is_file():
                raise MinbertError(
                    f"{kept(run)}: no metrics.jsonl, where the counts are (a run recovered from the study's logs?); "
                    "run --gradvac where the study ran"
                )
            runs[row] += 1
            for r in read_metrics(kept(run) / "metrics.jsonl"):
                if "epoch" not in r:
                    continue
                n = per_epoch.setdefault(int(r["epoch"]), Counter())
                for k, v in r.items():
                    last = k.rsplit("/", 1)[-1]
                    if (k.startswith("gradvac/") or k.startswith("conflict/")) and last in keys:
                        n[last] += v
    for epoch in sorted(per_epoch):
        n = per_epoch[epoch]

        def share(x: str, y: str) -> str:
            return f"{n[x]:.0f} / {n[y]:.0f} ({n[x] / n[y]:.1%})" if n[y] else "-"

        out.append(
            f"| {epoch} | {share('altered', 'rows')} | {share('fixes', 'checks')} | {share('negative', 'pairs')} |"
        )
    out.append("")
    done = f"gradvac {runs['gradvac']}, naive {runs['naive']}"
    out.append(f"Summed over the runs finished: {done} (of {len(seeds)} seeds each).")
    return "\n".join(out)


def rankings(budget: int | None, seeds: list[int], extra=()) -> str:
    """Each report's headline ranking: its rows with published numbers that have every seed here, ordered by the
    published overall (on CS224N's scale), with the published per-task numbers beside minbert's means and minbert's
    mean overall and rank, and Kendall's tau between the two orders (1: the same order, -1: reversed)."""
    out = []
    for path in sorted(Path("configs/reports").glob("[0-9][0-9][0-9].yaml")):
        sweep = _sweep(path, budget, tuple(seeds), tuple(extra))
        ours: dict[str, list[dict]] = {}
        for name, _, run, _ in sweep.runs():
            if name in sweep.published and (kept(run) / "summary.json").is_file():
                ours.setdefault(name, []).append(read_summary(kept(run))["dev"])
        rows = [n for n in sweep.published if len(ours.get(n, [])) == len(seeds)]
        if not rows:
            out.append(f"**{path.stem}**: no row has all {len(seeds)} seeds yet.")
            continue
        published = {n: published_overall(sweep.published[n]) for n in rows}
        overall = {n: [dev["overall"] for dev in ours[n]] for n in rows}
        mine = {n: float(np.mean(overall[n])) for n in rows}
        theirs, us = rank(published), rank(mine)
        lines = [
            f"**{path.stem}**",
            "",
            "| row | published SST / Quora / STS r | overall | rank | minbert SST / Quora / STS r | overall | rank |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in sorted(rows, key=theirs.get):
            pub = " / ".join(f"{sweep.published[n][t]:.3f}" for t in ("sst", "quora", "sts"))
            per_task = " / ".join(f"{np.mean([dev[m] for dev in ours[n]]):.3f}" for m in TASK_METRICS)
            lines.append(
                f"| {n} | {pub} | {published[n]:.3f} | {theirs[n]} | {per_task} | {cell(overall[n])} | {us[n]} |"
            )
        if len(rows) > 2:
            tau = kendalltau([published[n] for n in rows], [mine[n] for n in rows]).statistic
            lines += ["", f"Kendall's tau over {len(rows)} rows: {tau:+.2f}"]
        out.append("\n".join(lines))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=int, help="the study's --budget STEPS (its runs in runs/reports/NNN-STEPSsteps)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--claims", type=Path, default=Path("docs/study/reports/claims.yaml"))
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="for the majority-class shares")
    p.add_argument("--gradvac", action="store_true", help="claim 11's per-epoch counts instead of the table")
    p.add_argument("--rankings", action="store_true", help="each report's headline ranking instead of the table")
    p.add_argument("--record", type=Path, metavar="DIR", help="read the runs from the study's record DIR")
    p.add_argument(
        "--update",
        type=Path,
        metavar="FILE",
        help="also put the markdown into FILE between its lines '<!-- scripts/claims.py: table -->' (or ': gradvac')"
        " and '<!-- end -->' (docs/REPORTS.md)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="the study's overrides (precision=bf16 threads=1)")
    args = p.parse_args(argv)
    global RECORD
    RECORD = args.record
    if RECORD is not None and not RECORD.is_dir():
        print(f"error: --record {RECORD}: not a folder; give the study's record folder", file=sys.stderr)
        return 2
    try:
        if args.gradvac:
            md = gradvac_counts(args.budget, args.seeds, args.overrides)
        elif args.rankings:
            md = rankings(args.budget, args.seeds, args.overrides)
        else:
            md = table(load_yaml(args.claims)["claims"], args.budget, args.seeds, args.data_dir, args.overrides)
    except MinbertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md)
    if args.update:
        try:
            update(args.update, "gradvac" if args.gradvac else "rankings" if args.rankings else "table", md)
        except MinbertError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


def update(path: Path, block: str, md: str) -> None:
    """Replaces the lines between `<!-- scripts/claims.py: BLOCK -->` and the next `<!-- end -->` in `path`."""
    start, end = f"<!-- scripts/claims.py: {block} -->", "<!-- end -->"
    text = path.read_text(encoding="utf-8")
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if j < 0:
        raise MinbertError(f"{path}: no lines {start!r} ... {end!r} to put the {block} between")
    path.write_text(text[: i + len(start)] + "\n" + md + "\n" + text[j:], encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
