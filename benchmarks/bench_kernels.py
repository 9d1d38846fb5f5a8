"""The kernel-level measurements behind three choices in the encoder's CPU training path. Run by hand:

    python benchmarks/bench_kernels.py [--record]

1. one attention layer (32 x 12 heads x 48 x 48, head size 32, half the batch padded), forward + backward, bf16:
   PyTorch's SDPA with and without dropout vs `attention_math` (model/fast/cpu.py) with our dropout;
2. dropout of a 32 x 48 x 384 tensor, forward + backward, bf16: F.dropout vs `model/fast/dropout.py`;
3. one AdamW step over the embedded checkpoint's parameters: the foreach path vs the fused kernel path.
Medians of interleaved calls. Prints a table (`--record`: also to benchmarks/log/, benchmarks/_record.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _record import add_record_flag, record  # benchmarks/_record.py (scripts run from the repository root)

from minbert.model import BertModel, default_checkpoint_dir
from minbert.model.fast.cpu import attention_math
from minbert.model.fast.dropout import dropout
from minbert.optim import AdamW


def timed(fns: dict, iters: int = 20) -> dict[str, float]:
    """Median ms per call of each function, the calls taking turns."""
    for f in fns.values():
        f(), f()
    times = {k: [] for k in fns}
    for _ in range(iters):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    add_record_flag(ap)
    args = ap.parse_args()
    torch.manual_seed(0)
    q, k, v = (torch.randn(32, 12, 48, 32, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = torch.ones(32, 1, 1, 48, dtype=torch.bool)
    mask[:16, ..., 36:] = False

    def sdpa(p):
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p).sum().backward()

    att = timed(
        {
            "SDPA, no dropout": sdpa(0.0),
            "SDPA, dropout 0.1": sdpa(0.1),
            "attention_math, dropout 0.1": lambda: attention_math(q, k, v, mask, 0.1).sum().backward(),
        }
    )
    x = torch.randn(32, 48, 384, dtype=torch.bfloat16, requires_grad=True)
    drop = timed(
        {
            "F.dropout": lambda: F.dropout(x, 0.1).sum().backward(),
            "minbert dropout": lambda: dropout(x, 0.1, True).sum().backward(),
        }
    )
    model = BertModel.from_pretrained(default_checkpoint_dir())
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opts = {
        "foreach": AdamW(model.parameters(), lr=1e-5, fused=False),
        "fused": AdamW(model.parameters(), lr=1e-5, fused=True),
    }
    adam = timed({f"AdamW, {k} path": o.step for k, o in opts.items()}, iters=10)
    rows = [f"| attention layer fwd+bwd (bf16) | {k} | {v:.1f} |" for k, v in att.items()]
    rows += [f"| dropout 32x48x384 fwd+bwd (bf16) | {k} | {v:.2f} |" for k, v in drop.items()]
    rows += [
        f"| AdamW step, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters | {k} | {v:.1f} |"
        for k, v in adam.items()
    ]
    table = "\n".join(["| what | variant | ms (median) |", "|---|---|---|", *rows])
    setup = f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of interleaved calls after 2 warm-up calls each."
    record("bench_kernels", setup, table, write=args.record)


if __name__ == "__main__":
    main()
