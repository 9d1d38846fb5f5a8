"""IMTL-G, impartial multi-task learning's gradient balance (Liu et al. 2021, "Towards Impartial Multi-task
Learning", section 3.2): the update g = G^T a whose projection onto every task's unit gradient u_i = g_i / |g_i| is
the same, g . u_i = g . u_j, with sum_i a_i = 1.

With the Gramian M = G G^T and d = sqrt(diag M) (the norms), g . u_i equal for all i means M a = c d, so
a = M^+ d / sum(M^+ d) - the closed form of Quinton & Rey 2024 (TorchJD's `IMTLG`), which also holds when gradients
are linearly dependent (the pseudo-inverse); all zero when sum(M^+ d) vanishes. The update is T G^T a (the sum's
scale).
"""

from __future__ import annotations

import torch

from minbert.combiners.base import Combiner, combine, gramian


def imtl_weights(M: torch.Tensor) -> torch.Tensor:
    v = torch.linalg.pinv(M) @ M.diagonal().sqrt()
    total = v.sum()
    return torch.zeros_like(v) if total.abs() < 1e-12 else v / total


class IMTLG(Combiner):
    def __call__(self, grads, rng, names=None):
        return combine(grads, grads.shape[0] * imtl_weights(gramian(grads)))
