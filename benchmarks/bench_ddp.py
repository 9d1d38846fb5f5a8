"""Data parallel training on this machine: 1 process vs 2 (torchrun, gloo), the same global batch (32 per task),
quickstart tasks, fused summed losses. Run by hand:

    python benchmarks/bench_ddp.py [--steps 20] [--fp32] [--record]

Each setting runs `torchrun --standalone --nproc-per-node N benchmarks/bench_ddp.py --worker`; rank 0 times the
training steps (after 2 warm-up) and reports examples/s. Prints a table (`--record`: also to benchmarks/log/, benchmarks/_record.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(steps: int, precision: str) -> None:
    import torch

    from minbert.config import load_config
    from minbert.distributed import barrier, setup
    from minbert.multitask.config import TrainConfig
    from minbert.multitask.data import BatchStream, step_batches
    from minbert.multitask.run import build, load_data
    from minbert.multitask.techniques import Techniques
    from minbert.optim import AdamW
    from minbert.runs import set_threads

    cfg = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [f"precision={precision}"]).validate()
    d, device = setup("cpu")
    threads = set_threads(0, d.local_world)
    torch.manual_seed(0)
    model, tok = build(cfg, device)
    data = load_data(cfg, tok, ("train",))["train"]
    tech, opt = Techniques(cfg, model, device), AdamW(model.parameters(), lr=cfg.lr)
    streams = {n: BatchStream(n, x.lengths, cfg.task(n).batch_size, cfg.seed) for n, x in data.items()}
    model.train()
    examples = 0
    for i in range(steps + 2):
        if i == 2:
            barrier()
            t = time.perf_counter()
        idx = {n: s.next() for n, s in streams.items()}
        tech.stepper.step(opt, step_batches(data, idx, tok.pad_id, device, d.rank, d.world), i)
        examples += sum(len(v) for v in idx.values()) if i >= 2 else 0
    barrier()
    if d.main:
        print(
            "RESULT " + json.dumps({"world": d.world, "threads": threads, "eps": examples / (time.perf_counter() - t)})
        )


def main() -> None:
    from _record import add_record_flag, record  # benchmarks/_record.py

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--worker", action="store_true")
    add_record_flag(ap)
    args = ap.parse_args()
    precision = "fp32" if args.fp32 else "bf16"
    if args.worker:
        return worker(args.steps, precision)
    res = {}
    for n in (1, 2):
        cmd = [
            "torchrun",
            "--standalone",
            "--nproc-per-node",
            str(n),
            __file__,
            "--worker",
            "--steps",
            str(args.steps),
        ] + (["--fp32"] if args.fp32 else [])
        out = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True
        ).stdout
        res[n] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    table = "\n".join(
        [
            "| processes (gloo) | threads each | examples/s | scaling vs 1 process |",
            "|---|---|---|---|",
            *(f"| {n} | {r['threads']} | {r['eps']:.1f} | {r['eps'] / res[1]['eps']:.2f}x |" for n, r in res.items()),
        ]
    )
    setup = (
        f"quickstart tasks, global batch 32 per task (each of 2 processes takes 16), fused summed losses, {precision}, "
        f"{args.steps} timed steps after 2 warm-up, {os.cpu_count()} CPU cores in all; python {sys.version.split()[0]}."
    )
    record("bench_ddp", setup, table, write=args.record)


if __name__ == "__main__":
    main()
