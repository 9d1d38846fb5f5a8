"""What a step does to all gradients at once - the finiteness check, clipping by the global norm - for dense
gradients and the row-sparse gradient of a lazily updated table (`lazy_word_embeddings`: `nn.Embedding(sparse=True)`
gives a sparse COO gradient, which `torch.nn.utils.clip_grad_norm_` and PyTorch's foreach norm do not take).

`coalesce_sparse` first: autograd leaves a sparse gradient with one row per token (and accumulation appends more),
and only the summed rows have the right norm. Without sparse gradients everything is PyTorch's own call, unchanged.
"""

from __future__ import annotations

import torch

from minbert import torch_private as private


def coalesce_sparse(params) -> None:
    """Each sparse gradient with its duplicate rows summed, in place of the one autograd left."""
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()


def _values(g: torch.Tensor) -> torch.Tensor:
    """The numbers of a gradient: a coalesced sparse one's stored rows (an alias: writing them writes the gradient)."""
    return g.values() if g.is_sparse else g


def finite(grads: list[torch.Tensor]) -> torch.Tensor:
    """Whether every value of these gradients (sparse ones coalesced, at least one) is finite, as a 0-dim bool tensor
    on their device: the sum of their norms is finite. Nothing is read back (the GPU's sync-free step)."""
    return torch.isfinite(torch.stack(private.foreach_norm([_values(g) for g in grads])).sum())


def all_finite(grads: list[torch.Tensor]) -> bool:
    """Whether every value of these gradients (sparse ones coalesced) is finite."""
    return not grads or bool(finite(grads))


def clip_grad_norm_(params, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (2-norm), also over coalesced sparse gradients: the same norm as their dense
    form, the same clip coefficient (max_norm / (norm + 1e-6), at most 1), applied to their stored rows."""
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not any(g.is_sparse for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    vals = [_values(g) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(private.foreach_norm(vals)))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    private.foreach_mul_(vals, coef)
    return total
