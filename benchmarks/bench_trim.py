"""What handing freed heap memory back to the OS costs a training step: the bf16 (or fp32) fine-tuning step of
bench_encoder.py on real SST batches, in blocks of steps that take turns - no trim (`trim_every: 0`) and glibc's
malloc_trim after every step (`trim_every: 1`, the default, which keeps resident memory flat over a long run:
benchmarks/RESULTS.md, "memory"). Run by hand, with nothing else running:

    python benchmarks/bench_trim.py [--precision bf16] [--rounds 3] [--steps 16] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from _record import add_record_flag, record, runtime  # benchmarks/_record.py (scripts run from the repository root)
from bench_encoder import batches, train_fn
from memory import rss_mb  # benchmarks/memory.py: VmRSS from /proc

from minbert.data.tokenizer import Tokenizer
from minbert.model import BertModel, default_checkpoint_dir, fast
from minbert.optim import AdamW
from minbert.runs import release_memory


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16)
    add_record_flag(ap)
    args = ap.parse_args()
    torch.manual_seed(0)
    ckpt = default_checkpoint_dir()
    data = batches(Tokenizer.from_pretrained(ckpt), "train", 32, 8, shuffle=True)
    model = fast.install(BertModel.from_pretrained(ckpt), "cpu").train()  # the CPU's fast paths, as a run has them
    head = torch.nn.Linear(model.config.hidden_size, 5)
    step = train_fn(
        model, head, AdamW([*model.parameters(), *head.parameters()], lr=1e-5), data, args.precision == "bf16", False
    )
    after = {"no trim": lambda: None, "malloc_trim every step": release_memory}
    for _ in range(5):
        step()
    times = {k: [] for k in after}
    rss = {k: [] for k in after}
    for _ in range(args.rounds):
        for name, then in after.items():
            block = []
            for _ in range(args.steps):
                t = time.perf_counter()
                step()
                then()
                block.append(time.perf_counter() - t)
                rss[name].append(rss_mb(os.getpid()))  # MiB
            times[name].append(statistics.median(block))
    base = statistics.median(times["no trim"])
    rows = [
        f"| {name} | {statistics.median(v) * 1e3:.0f} | {statistics.median(v) / base:.2f}x "
        f"| {statistics.median(rss[name]):.0f} | {max(rss[name]):.0f} |"
        for name, v in times.items()
    ]
    table = "\n".join(
        [
            "| after each step | ms per step (median of block medians) | vs no trim | RSS after a step, median MiB | max MiB |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    setup = (
        f"{args.precision} fine-tuning step of bench_encoder.py (embedded checkpoint, 8 shuffled SST train batches of 32, "
        f"mean pooling, 5-way head, minbert AdamW); {args.rounds} rounds of {args.steps}-step blocks, the two settings "
        f"taking turns; RSS read after each step (peaks inside a step are higher); "
        f"{runtime()}."
    )
    record("bench_trim", setup, table, write=args.record)


if __name__ == "__main__":
    main()
