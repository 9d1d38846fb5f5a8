"""`compile: inductor` on a CPU: the bf16 (or fp32) fine-tuning step with the encoder layers compiled, against eager.

    python benchmarks/bench_compile.py [--precision bf16] [--iters 16] [--record]

bench_encoder.py's fine-tuning step (embedded checkpoint, 8 shuffled SST train batches of 32, mean pooling, a 5-way
head, minbert's AdamW) twice from the same weights: as it runs, and with each encoder layer handed to torch.compile
(inductor, dynamic shapes) exactly as a run's `compile: inductor` does (model/compile.py). The compiled side first
runs every batch once (the compilations, timed), then the two sides are timed interleaved, step by step. The weights
after those first steps are compared, beside how far the steps moved them: inductor fuses the elementwise chains into
its own kernels (another rounding) and may draw dropout's random bits its own way. Issue 23 names inductor as the way to fuse LayerNorm, GELU, dropout and the residual adds on a CPU.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _record import add_record_flag, record, runtime  # benchmarks/_record.py (scripts run from the repository root)
from bench_encoder import interleaved, pass_data, peak_fn, real_flops, train_fn

from minbert.model import BertModel, default_checkpoint_dir, fast
from minbert.model.compile import compile_layers
from minbert.optim import AdamW


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--iters", type=int, default=16)
    add_record_flag(ap)
    args = ap.parse_args()
    bf16 = args.precision == "bf16"
    torch.manual_seed(0)
    ckpt = default_checkpoint_dir()
    data, _ = pass_data(ckpt)
    eager = fast.install(BertModel.from_pretrained(ckpt), "cpu").train()  # the CPU's fast paths, as a run has them
    compiled = copy.deepcopy(eager)
    if not compile_layers(compiled, "inductor"):
        raise SystemExit("inductor is not available here (see the warning above)")
    head = torch.nn.Linear(eager.config.hidden_size, 5)
    fns, heads = {}, {}
    for name, model in (("eager", eager), ("inductor", compiled)):
        heads[name] = copy.deepcopy(head)
        params = [*model.parameters(), *heads[name].parameters()]
        fns[name] = train_fn(model, heads[name], AdamW(params, lr=1e-5), data, bf16, False)
    # the same steps on both sides from the same seed: then their weights can be compared, beside how far the
    # steps moved them (inductor may draw the dropout masks with its own generator)
    start = [p.detach().clone() for p in eager.parameters()]
    t0 = time.perf_counter()
    torch.manual_seed(1)
    for _ in data:
        fns["inductor"]()
    first = time.perf_counter() - t0
    torch.manual_seed(1)
    for _ in data:
        fns["eager"]()
    diff = max(
        (a.float() - b.float()).abs().max().item()
        for a, b in zip(eager.parameters(), compiled.parameters(), strict=True)
    )
    moved = max((a.float() - b).abs().max().item() for a, b in zip(eager.parameters(), start, strict=True))
    times, peak = interleaved(fns, args.iters, peak_fn(torch.bfloat16 if bf16 else torch.float32))
    flops = sum(real_flops(eager.config, m.sum(1).tolist(), True) for _, m, _ in data) / len(data)
    rows = [
        f"| {name} | {32 / t:.1f} | **{flops / t / 1e9 / peak:.0%}** | {times['eager'] / t:.2f}x |"
        for name, t in times.items()
    ]
    table = "\n".join(
        [
            "| step | sentences/s | share of peak | against eager |",
            "|---|---|---|---|",
            *rows,
            "",
            f"The compiled side's first pass over the {len(data)} batches (its compilations): {first:.0f} s. "
            f"Weights after those {len(data)} steps from the same seed, largest difference between the sides: "
            f"{diff:.2e}, against {moved:.2e} for the largest change the steps made to a weight on the eager side.",
        ]
    )
    setup = (
        f"{args.precision} fine-tuning step (embedded checkpoint, {len(data)} shuffled SST train batches of 32, mean "
        f"pooling, 5-way head, minbert AdamW), eager against the encoder layers compiled by inductor (dynamic "
        f"shapes, as `compile: inductor`), medians of {args.iters} interleaved steps after the compiled side's "
        f"first pass; matmul peak {peak:.0f} GFLOP/s at the encoder's shapes in the same run; {runtime()}."
    )
    record("bench_compile", setup, table, write=args.record)


if __name__ == "__main__":
    main()
