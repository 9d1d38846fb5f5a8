"""What every benchmark does with its table: print it under the command that produced it and, only when run with
`--record`, append that record to this month's file in benchmarks/log/ (append-only; benchmarks/log/README.md).
benchmarks/RESULTS.md holds the current table of each claim and is edited by hand; no script writes it."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

LOG = Path(__file__).with_name("log")


def runtime() -> str:
    """What a record's setup ends with: this PyTorch, its threads, the machine."""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}"


def add_record_flag(parser: argparse.ArgumentParser) -> None:
    """`--record` / `--no-record` (the default): whether the record also goes to benchmarks/log/."""
    parser.add_argument(
        "--record",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also append the record to benchmarks/log/YYYY-MM.md (default: print it only)",
    )


def record(name: str, setup: str, table: str, *, write: bool = False) -> Path | None:
    """Print the record; with `write`, append it to benchmarks/log/YYYY-MM.md and return that file."""
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    text = f"\n## {name}: {time.strftime('%Y-%m-%d %H:%M')}\n\n`{command}`\n\n{setup}\n\n{table}\n"
    print(text)
    if not write:
        return None
    path = LOG / f"{time.strftime('%Y-%m')}.md"
    LOG.mkdir(exist_ok=True)
    with open(path, "a") as f:
        if f.tell() == 0:
            f.write(f"# Benchmark records, {time.strftime('%Y-%m')}\n")
        f.write(text)
    print(f"recorded in {path}")
    return path
