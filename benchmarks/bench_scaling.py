"""How cost grows with work. Run by hand:

    python benchmarks/bench_scaling.py [--base 320] [--fp32]

1. Time per training epoch (one pass over each task's data, round-robin, fused, summed losses) at 1x, 2x and 4x the
   data: the first `base`, 2*base, 4*base training examples of each quickstart task; with the real tokens per
   epoch, since the later examples need not have the same lengths as the first.
2. Time per encoder training step (forward, backward, AdamW; batch 32) at sequence lengths 16 to 256.
Prints the tables and appends them, with the command, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from _record import record  # benchmarks/_record.py (scripts run from the repository root)

from minbert.config import load_config
from minbert.model import BertModel, default_checkpoint_dir
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import BatchStream, step_batches
from minbert.multitask.techniques import Techniques
from minbert.multitask.train import build, load_data
from minbert.optim import AdamW
from minbert.runs import autocast

ROOT = Path(__file__).resolve().parents[1]


def epoch_seconds(cfg: TrainConfig, limit: int, repeats: int) -> tuple[float, int, int]:
    """Median seconds of `repeats` epochs, steps per epoch, real (non-padding) tokens per epoch."""
    cfg = dataclasses.replace(cfg, tasks={n: dataclasses.replace(t, train_limit=limit) for n, t in cfg.tasks.items()})
    device = torch.device("cpu")
    torch.manual_seed(0)
    model, tok = build(cfg, device)
    data = load_data(cfg, tok, ("train",))["train"]
    tech, opt = Techniques(cfg, model, device), AdamW(model.parameters(), lr=cfg.lr)
    model.train()

    def epoch() -> tuple[float, int, int]:
        streams = {n: BatchStream(n, d.lengths, cfg.task(n).batch_size, cfg.seed) for n, d in data.items()}
        steps, tokens, t = max(s.per_pass for s in streams.values()), 0, time.perf_counter()
        for i in range(steps):
            micro = step_batches(data, {n: s.next() for n, s in streams.items()}, tok.pad_id, device)
            tokens += sum(int(b.mask.sum()) for b in micro[0][0].values())
            tech.train_step(opt, micro, i)
        return time.perf_counter() - t, steps, tokens

    epoch()  # warm-up
    runs = [epoch() for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), runs[0][1], runs[0][2]


def step_ms(model, opt, length: int, precision: str, iters: int = 6) -> float:
    ids = torch.randint(1000, 30000, (32, length))
    times = []
    for i in range(iters + 2):
        t = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            loss = model(ids).last_hidden_state.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=320, help="training examples per task at 1x")
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per data size (median)")
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    precision = "fp32" if args.fp32 else "bf16"
    cfg = load_config(TrainConfig, ROOT / "configs" / "quickstart.yaml", [f"precision={precision}"]).validate()

    rows, first = [], None
    for k in (1, 2, 4):
        sec, steps, tokens = epoch_seconds(cfg, args.base * k, args.repeats)
        first = first or (sec, tokens)
        rows.append(f"| {k}x | {args.base * k} | {steps} | {tokens} ({tokens / first[1]:.2f}x) | {sec:.1f} | {sec / first[0]:.2f}x | "
                    f"{1000 * sec / tokens:.2f} |")
    epochs = "\n".join(["| data | examples per task | steps | real tokens per epoch (vs 1x) | s per epoch | vs 1x | ms per 1k tokens |",
                        "|---|---|---|---|---|---|---|", *rows])

    model = BertModel.from_pretrained(default_checkpoint_dir()).train()
    opt = AdamW(model.parameters(), lr=1e-5)
    lines, base = [], None
    for length in (16, 32, 64, 128, 256):
        ms = step_ms(model, opt, length, precision)
        base = base or ms / 16
        lines.append(f"| {length} | {ms:.0f} | {ms / (32 * length) * 1000:.0f} | {ms / length / base:.2f}x |")
    lengths = "\n".join(["| tokens per sequence | ms per step (batch 32) | us per token | per-token cost vs 16 |", "|---|---|---|---|", *lines])
    setup = (
        f"Epoch = one pass over each task's first N training examples (quickstart tasks, batch 32 per task, fused pass, "
        f"{precision}; median of {args.repeats} epochs after one warm-up epoch); encoder step = our BertModel on the embedded checkpoint, random ids, forward + backward + AdamW, "
        f"median of 6 after 2 warm-up. torch {torch.__version__}, {torch.get_num_threads()} threads."
    )
    record("bench_scaling", setup, epochs + "\n\n" + lengths, write=not args.no_write)


if __name__ == "__main__":
    main()
