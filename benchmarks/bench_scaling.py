"""How cost grows with work. Run by hand:

    python benchmarks/bench_scaling.py [--base 320] [--fp32] [--record]

1. Time per training epoch (one pass over each task's data, round-robin, fused, summed losses) at 1x, 2x and 4x the
   data: the first `base`, 2*base, 4*base training examples of each quickstart task; with the real tokens per
   epoch, since the later examples need not have the same lengths as the first.
2. Time per encoder training step (forward, backward, AdamW; batch 32) at sequence lengths 16 to 256.
Prints the tables under its command (`--record`: also to benchmarks/log/, benchmarks/_record.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from _record import add_record_flag, record  # benchmarks/_record.py (scripts run from the repository root)

from minbert.config import load_config
from minbert.model import BertModel, default_checkpoint_dir, fast
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, step_batches
from minbert.multitask.run import build, load_data
from minbert.multitask.techniques import Techniques
from minbert.optim import AdamW
from minbert.runs import autocast

ROOT = Path(__file__).resolve().parents[1]


class Setup:
    """One data size: the first `limit` training examples of each task, trained by the shared model and optimizer
    (one model for all sizes, so that the sizes differ in their data only, not in which memory they touch)."""

    def __init__(self, cfg: TrainConfig, limit: int, shared: tuple):
        self.cfg = cfg = dataclasses.replace(
            cfg, tasks={n: dataclasses.replace(t, train_limit=limit) for n, t in cfg.tasks.items()}
        )
        self.device = torch.device("cpu")
        self.model, self.tok, self.tech, self.opt = shared
        self.data = load_data(cfg, self.tok, ("train",))["train"]

    def epoch(self) -> tuple[float, int, int]:
        """Seconds, steps and real (non-padding) tokens of one pass over the data."""
        self.model.train()
        streams = {
            n: BatchStream(n, d.lengths, self.cfg.task(n).batch_size, self.cfg.seed) for n, d in self.data.items()
        }
        steps, tokens, elapsed = max(s.per_pass for s in streams.values()), 0, 0.0
        for i in range(steps):
            micro = step_batches(self.data, {n: s.next() for n, s in streams.items()}, self.tok.pad_id, self.device)
            tokens += sum(int(b.mask.sum()) for b in micro[0][0].values())
            t = time.perf_counter()
            self.tech.stepper.step(self.opt, micro, i)
            elapsed += time.perf_counter() - t
        return elapsed, steps, tokens


def step_ms(model, opt, length: int, precision: str) -> float:
    ids = torch.randint(1000, 30000, (32, length))
    t = time.perf_counter()
    with autocast(torch.device("cpu"), precision)():
        loss = model(ids).last_hidden_state.float().pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=320, help="training examples per task at 1x")
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per data size (median)")
    ap.add_argument("--fp32", action="store_true")
    add_record_flag(ap)
    args = ap.parse_args()
    precision = "fp32" if args.fp32 else "bf16"
    cfg = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [f"precision={precision}"]).validate()

    # the sizes (and below, the lengths) take turns, so that a shared VM's drift in speed, which reaches tens of
    # percent over minutes here, falls on all of them alike
    torch.manual_seed(0)
    model, tok = build(cfg, torch.device("cpu"))
    shared = (model, tok, Techniques(cfg, model, torch.device("cpu")), AdamW(model.parameters(), lr=cfg.lr))
    setups = {k: Setup(cfg, args.base * k, shared) for k in (1, 2, 4)}
    for st in setups.values():
        st.epoch()  # warm-up
    runs = {k: [] for k in setups}
    for _ in range(args.repeats):
        for k, st in setups.items():
            runs[k].append(st.epoch())
    rows, first = [], None
    for k, r in runs.items():
        sec, steps, tokens = statistics.median(x[0] for x in r), r[0][1], r[0][2]
        first = first or (sec, tokens)
        rows.append(
            f"| {k}x | {args.base * k} | {steps} | {tokens} ({tokens / first[1]:.2f}x) | {sec:.1f} | {sec / first[0]:.2f}x | "
            f"{1000 * sec / tokens:.2f} |"
        )
    epochs = "\n".join(
        [
            "| data | examples per task | steps | real tokens per epoch (vs 1x) | s per epoch | vs 1x | ms per 1k tokens |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )

    model = fast.install(BertModel.from_pretrained(default_checkpoint_dir()), "cpu").train()  # as a run's encoder
    opt = AdamW(model.parameters(), lr=1e-5)
    lengths = (16, 32, 64, 128, 256)
    times = {n: [] for n in lengths}
    for i in range(8):
        for n in lengths:
            ms = step_ms(model, opt, n, precision)
            if i >= 2:  # two warm-up rounds
                times[n].append(ms)
    med = {n: statistics.median(t) for n, t in times.items()}
    lines = [
        f"| {n} | {med[n]:.0f} | {med[n] / (32 * n) * 1000:.0f} | {med[n] / n / (med[16] / 16):.2f}x |" for n in lengths
    ]
    lengths = "\n".join(
        [
            "| tokens per sequence | ms per step (batch 32) | us per token | per-token cost vs 16 |",
            "|---|---|---|---|",
            *lines,
        ]
    )
    setup = (
        f"Epoch = one pass over each task's first N training examples (quickstart tasks, batch 32 per task, fused pass, "
        f"{precision}; one model trains all sizes; median of {args.repeats} epochs per size after one warm-up epoch, sizes taking turns); encoder step = our BertModel on the embedded checkpoint, random ids, forward + backward + AdamW, "
        f"median of 6 per length after 2 warm-up rounds, lengths taking turns. torch {torch.__version__}, {torch.get_num_threads()} threads."
    )
    record("bench_scaling", setup, epochs + "\n\n" + lengths, write=args.record)


if __name__ == "__main__":
    main()
