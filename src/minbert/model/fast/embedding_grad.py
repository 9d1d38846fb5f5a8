"""The word-embedding table's gradient in one reused buffer on a CPU: the same values, without a fresh 47 MB tensor
every step.

The table (the embedded checkpoint's 30,522 x 384 fp32 values) gets a dense gradient every training step. PyTorch's
embedding backward allocates it anew (`zeros`), and a fresh allocation that large is mapped fresh from the
operating system: page faults on every first touch, then an unmap when `zero_grad(set_to_none=True)` drops it - an
order of magnitude slower than zeroing memory already mapped (benchmarks/bench_paths.py measures it). Here the
backward writes into one buffer kept beside the table and hands autograd an alias of it, which autograd stores as
`.grad` without a copy.

Exact: the buffer is zeroed, then `index_add_` sums each token's gradient into its row in token order, as
`embedding_dense_backward` does on a CPU, and the padding row stays zero (tests/test_embedding_grad.py compares the
two bit for bit). The buffer is reused only when nothing outside still holds its last gradient (the storage's
reference count): a `.grad` kept for gradient accumulation, or gradients returned by `torch.autograd.grad` and held
by a combiner, make the backward allocate a fresh tensor as PyTorch would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minbert.torch_private import storage_holders as _holders  # -1 where PyTorch cannot say: always allocate afresh


class GradBuffer:
    """One reusable dense gradient for a table; never saved or copied with the model."""

    def __init__(self):
        self.buf: torch.Tensor | None = None
        self.alone = 0  # _holders(buf) when nothing but this object refers to it

    def take(self, weight: torch.Tensor) -> torch.Tensor:
        b = self.buf
        if b is None or b.shape != weight.shape or b.dtype != weight.dtype or b.device != weight.device:
            self.buf = torch.zeros_like(weight, memory_format=torch.contiguous_format)
            self.alone = _holders(self.buf)
            return self.buf
        if self.alone < 0 or _holders(b) != self.alone:  # the last gradient is still somebody's: leave it to them
            return torch.zeros_like(weight, memory_format=torch.contiguous_format)
        return b.zero_()

    def __deepcopy__(self, memo) -> "GradBuffer":
        return GradBuffer()  # a copied model (an ensemble member, a teacher) gets its own, empty

    def __getstate__(self):
        return {"buf": None, "alone": 0}


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, ids, padding_idx, pool):
        ctx.save_for_backward(ids)
        ctx.weight, ctx.padding_idx, ctx.pool = weight, padding_idx, pool  # the parameter: its shape for the buffer
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        g = ctx.pool.take(ctx.weight)
        g.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]).to(g.dtype))  # (V, H) += (N, H) by row
        if ctx.padding_idx is not None:
            g[ctx.padding_idx] = 0  # embedding_dense_backward skips padding tokens
        # a new tensor object over the buffer's storage: autograd keeps it as .grad instead of copying it
        return g.detach(), None, None, None


def embedding(weight: torch.Tensor, ids: torch.Tensor, padding_idx: int | None, pool: GradBuffer) -> torch.Tensor:
    """F.embedding(ids, weight, padding_idx), its weight gradient built in `pool`'s buffer when one is needed."""
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return F.embedding(ids, weight, padding_idx)
    return _Lookup.apply(weight, ids, padding_idx, pool)
