"""How far the bf16 (or fp32) training step can get toward the matmul peak without changing its math.

    python benchmarks/step_bound.py [--precision bf16] [--iters 24] [--record]

bench_encoder.py's fine-tuning step (SST train batches of 32, mean pooling, a 5-way head, minbert's AdamW), as it
runs, with `freeze_word_embeddings` (a switch that changes the math: no gradient or update for the vocabulary table)
and with `lazy_word_embeddings` (another: a row-sparse gradient of the rows looked up, updated lazily by AdamW),
interleaved with the matmul peak at the encoder's shapes. Then torch.profiler over 8 steps of each, its operators
grouped: the matmuls themselves, AdamW's fused kernel, copies (autocast's weight and gradient casts among them), the
dropout masks' random bits, and the rest. Two bounds follow from the profile and the measured share of peak:
- the matmuls' own rate inside the step (their FLOPs over their time): what a step of nothing but its matmuls,
  run as they run there, would reach; and the same for the two kinds apart - the projections and the feed-forward
  (mm, addmm: large products over all of a batch's tokens) and attention's batched matmuls (bmm: a small product per
  sentence and head, over each bucket's padded grid, counted on real tokens);
- the share of peak if everything outside the four groups took no time at all (LayerNorm, GELU, softmax, residual
  adds, the unpadding gathers, Python and autograd), the four groups left as they are.
Then the projections' and the feed-forward's products alone, at the step's own shapes (each batch's real tokens:
about half the rows of the peak's 1,536): the kernel's rate there, which no change to the rest of the step can
raise, and the share of peak of a step of nothing but those products and attention's batched matmuls.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _record import add_record_flag, record, runtime  # benchmarks/_record.py (scripts run from the repository root)
from bench_encoder import batches, interleaved, peak_fn, real_flops, train_fn
from torch.profiler import ProfilerActivity, profile

from minbert.data.tokenizer import Tokenizer
from minbert.model import BertModel, default_checkpoint_dir, fast
from minbert.optim import AdamW

GROUPS = {
    "matmuls": ("aten::mm", "aten::addmm", "aten::bmm"),
    "AdamW": ("aten::_fused_adamw_",),
    "copies": ("aten::copy_",),  # (sparse gradients' coalescing counts in the rest)
    "dropout bits": ("aten::random_",),
}


def grouped(fn, steps: int = 8) -> tuple[dict[str, float], float, list[tuple[str, float]], dict[str, float]]:
    """Self CPU seconds per step by group (the rest under "rest"), the profiled seconds per step, the rest's
    operators with their seconds per step, largest first, and every operator's seconds per step."""
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(steps):
            fn()
    totals, rest, ops = {k: 0.0 for k in [*GROUPS, "rest"]}, [], {}
    for e in p.key_averages():
        group = next((g for g, names in GROUPS.items() if e.key in names), "rest")
        ops[e.key] = e.self_cpu_time_total / 1e6 / steps
        totals[group] += ops[e.key]
        if group == "rest":
            rest.append((e.key, ops[e.key]))
    return totals, sum(totals.values()), sorted(rest, key=lambda kv: -kv[1]), ops


def alone_at_step_shapes(cfg, lengths: list[int], dtype, reps: int = 10) -> float:
    """Seconds per step of the step's projection and feed-forward products run alone at its own shapes: for each
    batch's n real tokens and each layer's (in, out) - q, k and v as one (H, 3H), the attention output, the
    feed-forward's two - the forward x @ W^T + b and the backward's dX = dY @ W and dW = dY^T @ x, each the best of
    3 rounds of `reps` calls; the mean over the batches, times the layers."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    total = 0.0
    for n in lengths:
        for i, o in ((H, 3 * H), (H, H), (H, I), (I, H)):
            x, w, b, dy = (torch.randn(*shape, dtype=dtype) for shape in ((n, i), (o, i), (o,), (n, o)))
            for f in (
                lambda x=x, w=w, b=b: torch.addmm(b, x, w.t()),
                lambda dy=dy, w=w: dy.mm(w),
                lambda dy=dy, x=x: dy.t().mm(x),
            ):
                f()
                best = float("inf")
                for _ in range(3):
                    t = time.perf_counter()
                    for _ in range(reps):
                        f()
                    best = min(best, (time.perf_counter() - t) / reps)
                total += best
    return total * cfg.num_hidden_layers / len(lengths)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--iters", type=int, default=24)
    add_record_flag(ap)
    args = ap.parse_args()
    bf16 = args.precision == "bf16"
    torch.manual_seed(0)
    ckpt = default_checkpoint_dir()
    data = batches(Tokenizer.from_pretrained(ckpt), "train", 32, 8, shuffle=True)
    fns, flops = {}, 0.0
    for name in ("as it runs", "freeze_word_embeddings (changes the math)", "lazy_word_embeddings (changes the math)"):
        model = fast.install(BertModel.from_pretrained(ckpt), "cpu").train()  # the CPU's fast paths, as a run's
        # what multitask/run.py does for each switch
        if name.startswith("freeze"):
            model.embeddings.word_embeddings.weight.requires_grad_(False)
        model.embeddings.word_embeddings.sparse = name.startswith("lazy")
        head = torch.nn.Linear(model.config.hidden_size, 5)
        params = [p for p in [*model.parameters(), *head.parameters()] if p.requires_grad]
        fns[name] = train_fn(model, head, AdamW(params, lr=1e-5), data, bf16, False)
        flops = statistics.mean(real_flops(model.config, m.sum(1).tolist(), True) for _, m, _ in data)
        c = model.config  # attention's part of real_flops: q k^T and probabilities @ v per sentence, 3x for training
        attn = statistics.mean(
            3 * c.num_hidden_layers * sum(4 * n * n * c.hidden_size for n in m.sum(1).tolist()) for _, m, _ in data
        )
    peak_now = peak_fn(torch.bfloat16 if bf16 else torch.float32)
    times, peak = interleaved(fns, args.iters, peak_now)
    lengths = [int(m.sum()) for _, m, _ in data]  # real tokens per batch
    alone = alone_at_step_shapes(model.config, lengths, torch.bfloat16 if bf16 else torch.float32)
    peak = max(peak, peak_now())  # measured again beside them
    rows, rests, bmm = [], [], None
    for name, fn in fns.items():
        share = flops / times[name] / 1e9 / peak
        g, total, rest, ops = grouped(fn)
        rests.append(f"- {name}: " + ", ".join(f"{k} {v / total:.1%}" for k, v in rest[:10]))
        frac = {k: v / total for k, v in g.items()}
        in_step = flops / g["matmuls"] / 1e9 / peak  # the matmuls' rate inside the step, as a share of peak
        dense = (flops - attn) / (ops.get("aten::mm", 0.0) + ops.get("aten::addmm", 0.0)) / 1e9 / peak
        small = attn / ops.get("aten::bmm", float("inf")) / 1e9 / peak
        kept = sum(frac[k] for k in GROUPS)
        bmm = ops.get("aten::bmm", 0.0) if bmm is None else bmm  # attention's batched matmuls as the step runs them
        rows.append(
            f"| {name} | {32 / times[name]:.1f} | **{share:.0%}** | "
            + " | ".join(f"{frac[k]:.1%}" for k in [*GROUPS, "rest"])
            + f" | {in_step:.0%} | {dense:.0%} | {small:.0%} ({ops.get('aten::bmm', 0.0) / total:.1%} of the step)"
            + f" | **{share / kept:.0%}** |"
        )
    time_note = "best of 3 rounds of 10 calls each, after the steps"
    table = "\n".join(
        [
            "| step | sentences/s | share of peak | matmuls | AdamW | copies | dropout bits | rest "
            "| the matmuls' own rate in the step | projections and feed-forward (mm, addmm) | attention (bmm) "
            "| share if the rest took no time |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"The projections and the feed-forward alone, at the step's own shapes (each batch's real tokens; "
            f"forward, dX and dW; {time_note}): **{(flops - attn) / alone / 1e9 / peak:.0%}** of the peak - the "
            f"kernel's own rate at those shapes, against the in-step column above. A step of nothing but those "
            f"products at that rate and attention's batched matmuls as the step runs them would reach "
            f"**{flops / (alone + bmm) / 1e9 / peak:.0%}** of the peak.",
            "",
            "The largest operators of the rest (share of the profiled step):",
            "",
            *rests,
        ]
    )
    setup = (
        f"{args.precision} fine-tuning step of bench_encoder.py (embedded checkpoint, 8 shuffled SST train batches of "
        f"32, mean pooling, 5-way head, minbert AdamW), medians of {args.iters} interleaved steps; matmul peak "
        f"{peak:.0f} GFLOP/s at the encoder's shapes in the same run; group shares of torch.profiler's self CPU time "
        f"over 8 more steps of each; {runtime()}."
    )
    record("step_bound", setup, table, write=args.record)


if __name__ == "__main__":
    main()
