"""Our BERT against transformers.BertModel: one training step (forward, backward, AdamW) and one inference pass,
same checkpoint, batch and lengths, fp32 and bf16 autocast, in one run. Run by hand:

    python benchmarks/bench_encoder.py [--batch 32] [--length 48] [--iters 20]

Prints a table and appends it, with the command, to benchmarks/RESULTS.md. Ratios > 1 mean ours is faster.
Also prints achieved GFLOP/s against a matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch
import transformers
from _record import record  # benchmarks/_record.py (scripts run from the repository root)

from minbert.model import BertModel, default_checkpoint_dir
from minbert.optim import AdamW


def matmul_peak(dtype, n=2048, iters=10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e9


def model_flops(cfg, batch, length, train: bool) -> float:
    """Matmul FLOPs of the encoder: 2 per multiply-add; a training step costs 3x the forward."""
    H, I, L, T = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, length
    per_token = L * (2 * (4 * H * H + 2 * H * I) + 2 * 2 * T * H) + 2 * H * H  # projections, FFN, QK^T and AV, pooler
    return per_token * batch * T * (3 if train else 1)


def timed_pair(fa, fb, iters) -> tuple[float, float]:
    """Median seconds per call of fa and of fb, calls interleaved (alternating which goes first) so that both
    see the same machine: on a shared 2-core VM, timing one after the other drifts by 10-15%."""
    for _ in range(3):
        fa()
        fb()
    ta, tb = [], []
    for i in range(iters):
        for f, acc in ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta)):
            t = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def step_fn(model, opt, ids, mask, bf16, hf):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    real = mask[..., None].float()  # (B, T, 1): the loss reads real tokens only, as a training loss does

    def train():
        with ctx:
            out = model(input_ids=ids, attention_mask=mask) if hf else model(ids, mask)
            loss = (out.last_hidden_state.float().pow(2) * real).sum() / real.sum() + out.pooler_output.float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.inference_mode()
    def infer():
        with ctx:
            model(input_ids=ids, attention_mask=mask) if hf else model(ids, mask)

    return train, infer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    ckpt = default_checkpoint_dir()
    ids = torch.randint(1000, 30000, (args.batch, args.length))
    mask = torch.ones_like(ids)
    mask[: args.batch // 2, args.length * 3 // 4 :] = 0  # half the batch padded: the mask path is exercised

    ours = BertModel.from_pretrained(ckpt)
    ref = transformers.BertModel.from_pretrained(ckpt)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows, extra = [], []
    frozen = BertModel.from_pretrained(ckpt)
    frozen.embeddings.word_embeddings.weight.requires_grad_(False)  # freeze_word_embeddings: changes the math
    padded = BertModel.from_pretrained(ckpt)
    padded.configured(unpad=False)  # every position computed, padding included, as transformers does
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"
        res = {}
        fns = {}
        for name, model, opt_cls, hf in (("ours", ours, AdamW, False), ("transformers", ref, torch.optim.AdamW, True)):
            fns[name] = step_fn(model, opt_cls(model.parameters(), lr=1e-5), ids, mask, bf16, hf)
        for kind, i in (("train", 0), ("infer", 1)):
            for m in (ours, ref):
                m.train(kind == "train")
            res["ours", kind], res["transformers", kind] = timed_pair(
                fns["ours"][i], fns["transformers"][i], args.iters
            )
        for kind in ("train", "infer"):
            flops = model_flops(ours.config, args.batch, args.length, kind == "train")
            o, r = res["ours", kind], res["transformers", kind]
            rows.append(
                f"| {precision} | {kind} | {args.batch / o:.1f} | {args.batch / r:.1f} | **{r / o:.2f}x** "
                f"| {flops / o / 1e9:.0f} ({flops / o / 1e9 / peaks[precision]:.0%}) | {flops / r / 1e9:.0f} ({flops / r / 1e9 / peaks[precision]:.0%}) |"
            )
        # the reference with torch's fused AdamW (what its optimizer could do), and ours with frozen embeddings
        ref_fused = step_fn(ref, torch.optim.AdamW(ref.parameters(), lr=1e-5, fused=True), ids, mask, bf16, True)[0]
        params = [p for p in frozen.parameters() if p.requires_grad]
        ours_frozen = step_fn(frozen, AdamW(params, lr=1e-5), ids, mask, bf16, False)[0]
        ours_padded = step_fn(padded, AdamW(padded.parameters(), lr=1e-5), ids, mask, bf16, False)[0]
        for m in (ours, ref, frozen, padded):
            m.train()
        o, r = timed_pair(fns["ours"][0], ref_fused, args.iters)
        extra.append(
            f"| {precision} | ours (exact) vs transformers + torch.optim.AdamW(fused=True) | {args.batch / o:.1f} | {args.batch / r:.1f} | **{r / o:.2f}x** |"
        )
        o, r = timed_pair(ours_padded, fns["transformers"][0], args.iters)
        extra.append(
            f"| {precision} | ours with unpad off (padding computed too) vs transformers | {args.batch / o:.1f} | {args.batch / r:.1f} | **{r / o:.2f}x** |"
        )
        o, r = timed_pair(ours_frozen, fns["transformers"][0], args.iters)
        extra.append(
            f"| {precision} | ours with freeze_word_embeddings (changes the math) vs transformers | {args.batch / o:.1f} | {args.batch / r:.1f} | {r / o:.2f}x |"
        )
    table = "\n".join(
        [
            "| precision | pass | ours ex/s | transformers ex/s | ratio | ours GFLOP/s (of peak) | transformers GFLOP/s (of peak) |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Training step, other comparisons (each pair interleaved in the same run):",
            "",
            "| precision | comparison | ours ex/s | transformers ex/s | ratio |",
            "|---|---|---|---|---|",
            *extra,
        ]
    )
    setup = (
        f"embedded checkpoint (all-MiniLM-L6-v2, 6x384), batch {args.batch} x {args.length} tokens (half padded to 3/4), "
        f"median of {args.iters} steps, ours and the reference interleaved; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}. "
        f"Matmul peak (2048x2048) in this run: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s. "
        "Train step = forward + backward + AdamW (ours: minbert.optim.AdamW, its default fused kernel path; reference: "
        "torch.optim.AdamW with its defaults, as a hand-written loop would use it). Ours trains with its cheaper dropout "
        "(16 random bits per element), written-out attention and, by default, unpadded batches (real tokens only; "
        "padding positions come out as zeros, which the loss, over real tokens, never reads); the exact-math rows change "
        "no result beyond rounding. GFLOP/s counts the padded batch's matmul work on both sides (its effective rate); "
        f"unpadded, ours does the {int(mask.sum())} real tokens' share of it ({int(mask.sum()) / mask.numel():.0%} of the tokens)."
    )
    record("bench_encoder", setup, table, write=not args.no_write)


if __name__ == "__main__":
    main()
