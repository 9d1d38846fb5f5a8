"""Resident memory of a whole `minbert train` run, sampled from /proc while it trains and evaluates. Run by hand,
with nothing else running:

    python benchmarks/memory.py [--interval 5] [--label NAME] [--record] -- configs/quickstart.yaml epochs=6 steps_per_epoch=300
    python benchmarks/memory.py --from-csv runs/memory/NAME.csv     # the table again, from saved samples

Everything after `--` is passed to `minbert train` (an `out=` is added under runs/memory/ unless given). Every
`--interval` seconds it reads VmRSS of the training process and the newest step in its metrics.jsonl, then writes
runs/memory/<label>.csv and .png and prints a table (`--record`: also to benchmarks/log/): peak RSS, RSS at step 100 and at
the last step, and the spread after step 100 (the goal: within 10%, and at most 2.5 GB for the quickstart).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from _record import add_record_flag, record  # benchmarks/_record.py (scripts run from the repository root)

from minbert.plot import plt, save_figure

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def last_step(metrics: Path) -> int:
    """The newest step in metrics.jsonl (0 before the first record)."""
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--label", default="", help="name of this measurement (default: from the time)")
    add_record_flag(ap)
    ap.add_argument("train", nargs=argparse.REMAINDER, help="-- CONFIG [key=value ...] for minbert train")
    ap.add_argument("--from-csv", metavar="CSV", help="summarize an earlier measurement's samples instead of running")
    args = ap.parse_args()
    if args.from_csv:
        with open(args.from_csv) as f:
            rows = list(csv.reader(f))[1:]
        samples = [(float(t), int(st), float(mb)) for t, st, mb in rows]
        record(
            "memory",
            f"samples of {args.from_csv}, summarized again",
            summary(samples, args.interval),
            write=args.record,
        )
        return
    train = [a for a in args.train if a != "--"]
    label = args.label or time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "runs" / "memory"
    out.mkdir(parents=True, exist_ok=True)
    if not any(a.startswith("out=") for a in train):
        train.append(f"out={out / label}")
    run = Path(next(a for a in train if a.startswith("out="))[4:])
    proc = subprocess.Popen([sys.executable, "-m", "minbert", "train", *train, "--overwrite"], cwd=ROOT)
    start, samples = time.time(), []  # (seconds, step, MB)
    while proc.poll() is None:
        mb = rss_mb(proc.pid)
        if mb is not None:
            samples.append((time.time() - start, last_step(run / "metrics.jsonl"), mb))
        time.sleep(args.interval)
    if proc.returncode or not samples:
        sys.exit(f"minbert train exited with {proc.returncode}")

    with open(out / f"{label}.csv", "w", newline="") as f:
        csv.writer(f).writerows([("seconds", "step", "rss_mb"), *samples])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([s[0] / 60 for s in samples], [s[2] / 1024 for s in samples])
    ax.set(xlabel="minutes", ylabel="resident memory (GB)", title=f"minbert train {' '.join(train[:1])}")
    ax.grid(alpha=0.3)
    save_figure(fig, out / f"{label}.png")

    table = summary(samples, args.interval)
    done = json.loads((run / "summary.json").read_text())  # what the run says of itself (minbert/allocator.py)
    table += f"\n| memory allocator, wall time (summary.json) | {done.get('allocator', '-')}, {done['wall_time_s']} s |"
    record(
        "memory",
        f"`minbert train {' '.join(train)}`; samples in runs/memory/{label}.csv, plot {label}.png",
        table,
        write=args.record,
    )


def summary(samples: list[tuple[float, int, float]], interval: float) -> str:
    """Peak RSS, and the envelope (the highest sample of each 5-minute window) from step 100 on: a drift upward
    shows in the envelope, while single samples also catch the dips after each release of freed memory."""
    peak = max(s[2] for s in samples)
    after = [s for s in samples if s[1] >= 100]
    steps = max(s[1] for s in samples)
    rows = [
        ("samples", f"{len(samples)} over {samples[-1][0] / 60:.1f} min, every {interval:g} s, last step {steps}"),
        ("peak RSS (whole run, evaluations included)", f"{peak / 1024:.2f} GB"),
    ]
    if after:
        windows: dict[int, float] = {}
        for t, _, mb in after:
            windows[int(t // 300)] = max(windows.get(int(t // 300), 0.0), mb)
        env = [windows[k] for k in sorted(windows)]
        lo, hi = min(s[2] for s in after), max(s[2] for s in after)
        rows += [
            ("5-minute peaks from step 100 on", " / ".join(f"{v / 1024:.2f}" for v in env) + " GB"),
            ("last 5-minute peak vs the first", f"{100 * (env[-1] - env[0]) / env[0]:+.0f}%"),
            ("single samples from step 100 on", f"{lo / 1024:.2f} .. {hi / 1024:.2f} GB"),
        ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


if __name__ == "__main__":
    main()
