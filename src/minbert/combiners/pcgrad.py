"""PCGrad, gradient surgery (Yu et al. 2020, Algorithm 1; reports 002 and 004).

For each task i, visit the other tasks j in random order; when g_i^PC . g_j < 0, remove from g_i^PC its component
along the *original* g_j:  g_i^PC <- g_i^PC - (g_i^PC . g_j / |g_j|^2) g_j.  The update is sum_i g_i^PC.
"""

import torch

from minbert.combiners.base import Combiner


class PCGrad(Combiner):
    def __call__(self, grads: torch.Tensor, rng, names=None) -> torch.Tensor:
        T = grads.shape[0]
        out = grads.clone()
        sq = (grads * grads).sum(1)  # |g_j|^2
        for i in range(T):
            others = [j for j in range(T) if j != i]
            rng.shuffle(others)
            for j in others:
                dot = out[i] @ grads[j]
                if dot < 0 and sq[j] > 0:
                    out[i] -= dot / sq[j] * grads[j]
        return out.sum(0)
