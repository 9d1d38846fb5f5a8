"""Cost of each technique per training step, relative to plain summed round-robin, measured in one run on the
quickstart setup (SST, Quora, STS; embedded checkpoint; `--precision auto`: bf16 where the CPU has it natively,
else fp32). Run by hand, with nothing else running:

    python benchmarks/bench_techniques.py [--steps 10] [--precision auto|fp32|bf16] [--only PALs LoRA] [--record]
        [--batch-size 8] [--threads 1]

Each variant trains `--steps` round-robin steps (after 2 warm-up steps) through the real training loop's
per-step code (multitask.stepper.Stepper.step), with the same batches. Prints the table (`--record`: also to benchmarks/log/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _record import add_record_flag, record  # benchmarks/_record.py (scripts run from the repository root)
from _step import step_runner  # benchmarks/_step.py

from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.run import build
from minbert.runs import resolve_precision

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "sum (baseline)": [],
    "conflict statistics": ["conflict_stats=true"],
    "PCGrad": ["combiner=pcgrad"],
    "GradVac": ["combiner=gradvac"],
    "SMART (K=1)": ["regularizers.smart.weight=1"],
    "Bregman": ["regularizers.bregman.mu=1"],
    "PALs": ["pals.enabled=true"],
    "MNRL on Quora (extra loss)": ["tasks.quora.extra_losses.mnrl.weight=1"],
    "sentiment MNRL on SST (extra loss)": ["tasks.sst.extra_losses.mnrl_sentiment.weight=1"],
    "heads lr x10, layer decay 0.9": ["head_lr_mult=10", "layer_lr_decay=0.9"],
    # issue 43: the aggregators (one backward per task, as PCGrad), the loss weightings (one summed backward; FAMO
    # a forward pass more), the weights' moving average
    **{
        name: [f"combiner={key}"]
        for name, key in (
            ("UPGrad", "upgrad"),
            ("MGDA", "mgda"),
            ("CAGrad", "cagrad"),
            ("Nash-MTL", "nash_mtl"),
            ("IMTL-G", "imtl_g"),
            ("Aligned-MTL", "aligned_mtl"),
        )
    },  # fmt: skip
    **{f"weighting {key}": [f"weighting={key}"] for key in ("uw", "dwa", "rlw", "gls", "imtl_l", "db_mtl", "famo")},
    "EMA of the weights": ["ema_decay=0.999"],
}
# per-task LoRA as configs/study/realistic-lora.yaml runs it: every linear layer of the encoder, alpha = 2 x rank
LORA = (
    "lora={enabled: true, rank: %d, alpha: %d, targets: [query, key, value, attention_output, intermediate, output]%s}"
)
for r in (8, 32):
    VARIANTS[f"LoRA r{r}, shared weights frozen"] = [LORA % (r, 2 * r, "")]
    VARIANTS[f"LoRA r{r}, shared weights trained"] = [LORA % (r, 2 * r, ", train_shared: true")]


def time_variant(overrides: list[str], steps: int, precision: str, batch: int | None = None) -> tuple[float, int]:
    """Seconds per step, and the number of parameters the variant trains (`batch`: every task's batch size)."""
    sizes = [f"tasks.{t}.batch_size={batch}" for t in ("sst", "quora", "sts")] if batch else []
    cfg = load_config(
        TrainConfig, ROOT / "configs" / "quickstart.yaml", [f"precision={precision}", *sizes, *overrides]
    ).validate()
    device = torch.device("cpu")
    torch.manual_seed(0)
    model, tok = build(cfg, device)
    step = step_runner(cfg, model, tok, device)
    for i in range(2):
        step(i)
    t = time.perf_counter()
    for i in range(steps):
        step(i + 2)
    return (time.perf_counter() - t) / steps, sum(p.numel() for p in model.parameters() if p.requires_grad)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    add_record_flag(ap)
    ap.add_argument("--only", nargs="*", help="only the variants whose name starts with one of these (and sum)")
    ap.add_argument("--batch-size", type=int, help="every task's batch size (default: the quickstart's 32)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = {
        n: o
        for n, o in VARIANTS.items()
        if n == "sum (baseline)" or not args.only or any(n.startswith(w) for w in args.only)
    }
    times = {name: time_variant(o, args.steps, args.precision, args.batch_size) for name, o in chosen.items()}
    precision = resolve_precision(torch.device("cpu"), args.precision)
    base = times["sum (baseline)"][0]
    rows = [f"| {name} | {t * 1000:.0f} | {t / base:.2f}x | {n:,} |" for name, (t, n) in times.items()]
    head = "| technique | ms per round-robin step | relative to sum | trained parameters |"
    table = "\n".join([head, "|---|---|---|---|", *rows])
    setup = (
        f"configs/quickstart.yaml (batch {args.batch_size or 32} per task, {precision}; CPU: {cpu_name()}), one step "
        f"= one batch of each of SST, Quora, STS, forward + backward + AdamW; mean of {args.steps} steps after 2 warm-up; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads."
    )
    record("bench_techniques", setup, table, write=args.record)


if __name__ == "__main__":
    main()
