"""Multitask throughput on the quickstart setup (SST, Quora, STS on the embedded checkpoint). Run by hand:

    python benchmarks/bench_multitask.py [--steps 20] [--fp32]

Reports, in one run: examples/s of a round-robin training step (forward, summed losses, backward, AdamW) with
length-bucketed batches and with plain shuffled batches; examples/s of a full dev evaluation (each distinct
sentence encoded once); and the fraction of padding tokens in the training batches with and without bucketing.
Prints a table and appends it, with the command, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from _record import record  # benchmarks/_record.py (scripts run from the repository root)

from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, make_batch, step_batches
from minbert.multitask.evaluate import evaluate
from minbert.multitask.techniques import Techniques
from minbert.multitask.train import build, load_data
from minbert.optim import AdamW

ROOT = Path(__file__).resolve().parents[1]


class ShuffledStream(BatchStream):
    """Plain shuffled batches of the same size, no length sorting: the baseline bucketing is measured against."""

    def next(self):
        p, i = divmod(self.consumed, self.per_pass)
        if p != self._pass:
            order = list(range(len(self.lengths)))
            random.Random(f"{self.seed}/{self.name}/{p}").shuffle(order)
            self._pass, self._batches = p, [order[j : j + self.batch_size] for j in range(0, len(order), self.batch_size)]
        self.consumed += 1
        return self._batches[i]


def padding(data, streams, pad_id, n) -> float:
    pad = total = 0
    for name, s in streams.items():
        for _ in range(n):
            b = make_batch(data[name], s.next(), pad_id)
            pad += int((b.mask == 0).sum())
            total += b.mask.numel()
    return pad / total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    cfg = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [f"precision={'fp32' if args.fp32 else 'bf16'}"])
    device = torch.device("cpu")
    torch.manual_seed(0)
    model, tok = build(cfg, device)
    data = load_data(cfg, tok, ("train", "dev"))
    tech = Techniques(cfg, model, device)  # plain summed losses: the quickstart switches on no technique
    opt = AdamW(model.parameters(), lr=cfg.lr)

    def streams(cls):
        return {n: cls(n, d.lengths, cfg.task(n).batch_size, cfg.seed) for n, d in data["train"].items()}

    def steps_per_second(cls) -> float:
        s = streams(cls)
        model.train()

        def step():
            tech.train_step(opt, step_batches(data["train"], {n: s[n].next() for n in cfg.tasks}, tok.pad_id, device), 0)

        for _ in range(3):
            step()
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        return args.steps / (time.perf_counter() - t)

    per_step = sum(cfg.task(n).batch_size for n in cfg.tasks)  # pairs count as one example
    bucketed = steps_per_second(BatchStream) * per_step
    shuffled = steps_per_second(ShuffledStream) * per_step
    t = time.perf_counter()
    evaluate(model, data["dev"], tok.pad_id, device, cfg.precision)
    eval_time = time.perf_counter() - t
    n_dev = sum(len(d) for d in data["dev"].values())
    pad_b = padding(data["train"], streams(BatchStream), tok.pad_id, 200)
    pad_s = padding(data["train"], streams(ShuffledStream), tok.pad_id, 200)

    precision = "fp32" if args.fp32 else "bf16"
    table = "\n".join(
        [
            "| measure | bucketed | shuffled (no bucketing) | ratio |",
            "|---|---|---|---|",
            f"| round-robin train step, examples/s ({precision}) | {bucketed:.1f} | {shuffled:.1f} | **{bucketed / shuffled:.2f}x** |",
            f"| padding tokens in training batches | {pad_b:.1%} | {pad_s:.1%} | |",
            f"| dev evaluation, examples/s ({precision}; {n_dev} examples in {eval_time:.1f} s) | {n_dev / eval_time:.1f} | | |",
        ]
    )
    setup = (
        f"configs/quickstart.yaml tasks (SST linear, Quora concat bi-encoder, STS cosine bi-encoder; batch "
        f"{per_step // len(cfg.tasks)} per task), embedded checkpoint, {args.steps} timed steps after 3 warm-up, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Padding measured over 200 batches per task."
    )
    record("bench_multitask", setup, table, write=not args.no_write)


if __name__ == "__main__":
    main()
