"""PCGrad, gradient surgery (Yu et al. 2020, Algorithm 1; reports 002 and 004).

For each task i, visit the other tasks j in random order; when g_i^PC . g_j < 0, remove from g_i^PC its component
along the *original* g_j:  g_i^PC <- g_i^PC - (g_i^PC . g_j / |g_j|^2) g_j.  The update is sum_i g_i^PC.

Every g_i^PC stays a combination of the original rows, g_i^PC = sum_k A_ik g_k (A = I at the start), so the
algorithm runs on their inner products alone, as TorchJD's PCGrad does: g_i^PC . g_j = A_i . (G G^T)_j, and a
projection subtracts dot / |g_j|^2 from A_ij. One pass over G forms the (T, T) Gramian and one forms the update
sum_i g_i^PC = (sum_i A_i) G, instead of T (T - 1) passes over rows of millions of values.
"""

import torch

from minbert.combiners.base import Combiner, combine, gramian


class PCGrad(Combiner):
    def __call__(self, grads: torch.Tensor, rng, names=None) -> torch.Tensor:
        T = grads.shape[0]
        M = gramian(grads)  # M[i, j] = g_i . g_j
        A = torch.eye(T, dtype=M.dtype)  # row i: g_i^PC in the basis of the original rows
        for i in range(T):
            others = [j for j in range(T) if j != i]
            rng.shuffle(others)
            for j in others:
                dot = A[i] @ M[:, j]  # g_i^PC . g_j
                if dot < 0 and M[j, j] > 0:
                    A[i, j] -= dot / M[j, j]
        return combine(grads, A.sum(0))
