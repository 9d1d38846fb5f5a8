"""Attention's data movement before and after: gathers instead of scatters where no backward follows, one copy of
q, k and v, and bf16 inference's scores masked in place with a softmax that reads them as fp32 itself.

    python benchmarks/bench_regroup.py [--iters 20] [--no-write]

model/varlen.py regroups the flat real tokens of a batch into a small padded grid per bucket of similar-length
sentences for attention, and `BertModel.encode` puts the flat states back into the batch's (B, T) grid. Before, both
were zeros + `index_copy` (a scatter) and attention's q, k and v were permuted views that each batched matmul copied
itself; now both are gathers from the rows with one zero row appended where no backward follows (`varlen.to_grid`;
with a backward they stay index_copy, whose backward is the cheaper) and q, k, v are one
contiguous copy on CPUs (`varlen.split_heads`). bf16 CPU inference's attention (`attention_cpu_inference`) added an -inf
bias to its scores and cast them to fp32 before the softmax; it now fills the mask in place (`scores`, wherever
no backward follows) and lets the softmax
read the bf16 scores as fp32. This script keeps the old code (verbatim below) and times both on
bench_encoder.py's passes - the fine-tuning step (SST train batches of 32, mean pooling, a 5-way head, minbert's
AdamW) and inference as `Runner` runs it (1,024 SST dev sentences in batches of 64; in bf16 the packed bf16 copy
where bf16 is native, in fp32 oneDNN's linear layers where faster) - each pair interleaved call by call. It first
checks that the two give the same values bit for bit: inference outputs, and the weights after 3 training steps
from the same weights and seed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy

import torch
from _record import record, runtime  # benchmarks/_record.py (scripts run from the repository root)
from bench_encoder import infer_fn, interleaved, pass_data, runner_copy, train_fn

from minbert.model import BertModel, default_checkpoint_dir, varlen
from minbert.model.bert import ATTENTION, sdpa
from minbert.optim import AdamW


def old_attention(qkv: torch.Tensor, v: varlen.Varlen, n_head: int, attend) -> torch.Tensor:
    """varlen.attention before: zeros + index_copy into each bucket's grid, q, k, v as permuted views."""
    H3 = qkv.shape[1]
    H, hs = H3 // 3, H3 // 3 // n_head
    out = []
    for part, (B, T), mask, keep in zip(qkv.split(v.sizes), v.grids, v.mask, v.keep):
        if keep is None:
            grid = part.view(B, T, H3)  # (B, T, 3H)
        else:
            grid = part.new_zeros(B * T, H3).index_copy(0, keep, part).view(B, T, H3)  # (B, T, 3H)
        q, k, val = grid.view(B, T, 3, n_head, hs).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, hs) each
        y = attend(q, k, val, mask).transpose(1, 2).reshape(B * T, H)  # (B*T, H)
        out.append(y if keep is None else y.index_select(0, keep))  # (n, H)
    return torch.cat(out)  # (N, H)


def old_split_heads(qkv: torch.Tensor, n_head: int):
    B, T, H3 = qkv.shape
    return qkv.view(B, T, 3, n_head, H3 // 3 // n_head).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, hs) views


def old_cpu_inference(q, k, v, mask, p: float) -> torch.Tensor:
    """bert.attention_cpu_inference before: its scores with an additive -inf bias, cast to fp32, then the softmax."""
    if q.dtype == torch.float32:
        return sdpa(q, k, v, mask, p)
    s = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # (B, nh, T, T)
    if mask is not None:
        s = s + torch.zeros(mask.shape, dtype=s.dtype, device=s.device).masked_fill_(~mask, float("-inf"))
    return s.float().softmax(-1).to(v.dtype) @ v  # (B, nh, T, hs)


def old_to_grid(rows: torch.Tensor, keep: torch.Tensor, slots: int, fill=None) -> torch.Tensor:
    """encode's way back to the (B, T) grid before (varlen.to_grid's one caller besides attention): zeros +
    index_copy."""
    return rows.new_zeros(slots, rows.shape[1]).index_copy(0, keep, rows)  # (slots, C)


@contextlib.contextmanager
def code(old: bool):
    if not old:
        yield
        return
    saved = varlen.attention, varlen.split_heads, varlen.to_grid, ATTENTION["cpu_inference"]
    varlen.attention, varlen.split_heads, varlen.to_grid = old_attention, old_split_heads, old_to_grid
    ATTENTION["cpu_inference"] = old_cpu_inference
    try:
        yield
    finally:
        varlen.attention, varlen.split_heads, varlen.to_grid, ATTENTION["cpu_inference"] = saved


def under(old: bool, fn):
    def call():
        with code(old):
            return fn()

    return call


def same_values(ckpt, train_data, infer_data, bf16: bool) -> tuple[bool, bool]:
    """(inference outputs equal, weights after 3 training steps equal), old code against new, bit for bit."""
    outs = []
    for old in (True, False):
        model = runner_copy(BertModel.from_pretrained(ckpt).eval(), bf16)
        with code(old), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outs.append([model.sentence_embedding(i, m, pooling="mean") for i, m, _ in infer_data[:4]])
    weights = []
    for old in (True, False):
        torch.manual_seed(1)
        model = BertModel.from_pretrained(ckpt).train()
        head = torch.nn.Linear(model.config.hidden_size, 5)
        step = train_fn(model, head, AdamW([*model.parameters(), *head.parameters()], lr=1e-4), train_data, bf16, False)
        with code(old):
            for _ in range(3):
                step()
        weights.append([p.detach().clone() for p in model.parameters()])
    return (
        all(torch.equal(a, b) for a, b in zip(*outs)),
        all(torch.equal(a, b) for a, b in zip(*weights)),
    )


def grid_ops(data, iters: int) -> list[str]:
    """The two ways into a bucket's grid alone, on every padded bucket of the training batches' layouts: (n, 3H)
    bf16 rows (the q, k, v projection's output), zeros + index_copy against a gather from the rows plus one zero
    row, forward only and forward + backward; milliseconds for all of them, medians of interleaved calls. to_grid
    takes the gather where no backward follows and index_copy where one does."""
    buckets = []
    for _, mask, _ in data:
        u = varlen.unpad(mask)
        if u is not None:
            v = u[0]
            buckets += [(B * T, keep, fill) for (B, T), keep, fill in zip(v.grids, v.keep, v.fill) if keep is not None]
    rows = [torch.randn(len(keep), 1152, dtype=torch.bfloat16, requires_grad=True) for _, keep, _ in buckets]
    grads = [torch.randn(slots, 1152, dtype=torch.bfloat16) for slots, _, _ in buckets]

    def run(gather: bool, backward: bool):
        def call():
            for r, g, (slots, keep, fill) in zip(rows, grads, buckets):
                with torch.set_grad_enabled(backward):
                    if gather:
                        y = torch.cat([r, r.new_zeros(1, r.shape[1])]).index_select(0, fill)  # (slots, 3H)
                    else:
                        y = r.new_zeros(slots, r.shape[1]).index_copy(0, keep, r)  # (slots, 3H)
                if backward:
                    y.backward(g)

        return call

    out = []
    for backward in (False, True):
        times, _ = interleaved({gather: run(gather, backward) for gather in (False, True)}, iters, lambda: 0.0)
        out.append(
            f"| {'forward + backward' if backward else 'forward (no grad)'} | {len(buckets)} "
            f"| {times[False] * 1e3:.2f} | {times[True] * 1e3:.2f} | **{times[False] / times[True]:.2f}x** |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    ckpt = default_checkpoint_dir()
    train_data, infer_data = pass_data(ckpt)
    rows = []
    for precision in ("bf16", "fp32"):
        bf16 = precision == "bf16"
        equal_out, equal_weights = same_values(ckpt, train_data, infer_data, bf16)
        fns = {}
        for old in (True, False):
            model = BertModel.from_pretrained(ckpt).train()
            head = torch.nn.Linear(model.config.hidden_size, 5)
            opt = AdamW([*model.parameters(), *head.parameters()], lr=1e-5)
            fns[("train", old)] = under(old, train_fn(model, head, opt, train_data, bf16, False))
            infer = runner_copy(copy.deepcopy(model).eval(), bf16)
            fns[("infer", old)] = under(old, infer_fn(infer, infer_data, bf16, False))
        for kind, per_call in (("train", 32), ("infer", sum(len(y) for _, _, y in infer_data))):
            pair = {old: fns[(kind, old)] for old in (True, False)}
            times, _ = interleaved(pair, args.iters, lambda: 0.0)
            same = equal_weights if kind == "train" else equal_out
            rows.append(
                f"| {precision} | {'training step' if kind == 'train' else 'inference'} "
                f"| {per_call / times[True]:.1f} | {per_call / times[False]:.1f} "
                f"| **{times[True] / times[False]:.2f}x** | {'yes' if same else 'NO'} |"
            )
    table = "\n".join(
        [
            "| precision | pass | before sentences/s | after | after / before | same values bit for bit |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "The regrouping alone (the training batches' padded buckets, (n, 3H) bf16 rows into each grid; "
            "milliseconds for all of them; to_grid takes the gather without a backward, index_copy with one):",
            "",
            "| pass | buckets | zeros + index_copy ms | gather (rows + a zero row) ms | index_copy / gather |",
            "|---|---|---|---|---|",
            *grid_ops(train_data, args.iters),
        ]
    )
    setup = (
        "bench_encoder.py's passes with attention's data movement as it was (zeros + index_copy, permuted q, k, v; "
        "bf16 inference: an -inf bias added, the scores cast to fp32 for the softmax) and as it is (gathers where no "
        "backward follows, one contiguous q, k, v copy; the mask filled in place, a softmax reading bf16 as fp32); "
        "training: 8 shuffled SST train batches of 32, "
        "medians of the interleaved steps, 'same values' = the weights after 3 steps from the same seed; "
        "inference as Runner runs it, 1,024 SST dev sentences in batches of 64, 'same values' = the embeddings of "
        f"the first 4 batches; {args.iters} interleaved calls of each; {runtime()}."
    )
    record("bench_regroup", setup, table, write=not args.no_write)


if __name__ == "__main__":
    main()
