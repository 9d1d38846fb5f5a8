"""What every benchmark does with its table: print it and append it, under the command that produced it, to
benchmarks/RESULTS.md."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def runtime() -> str:
    """What a record's setup ends with: this PyTorch, its threads, the machine."""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}"


def record(name: str, setup: str, table: str, write: bool = True) -> None:
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    text = f"\n## {name}: {time.strftime('%Y-%m-%d %H:%M')}\n\n`{command}`\n\n{setup}\n\n{table}\n"
    print(text)
    if write:
        with open(RESULTS, "a") as f:
            f.write(text)
