"""MGDA, the multiple-gradient descent algorithm (Désidéri 2012), as Sener & Koltun 2018 ("Multi-Task Learning as
Multi-Objective Optimization", Algorithm 2) solve it: the point of minimum norm in the convex hull of the task
gradients, min_{a in simplex} |G^T a|^2, by Frank-Wolfe on the Gramian M = G G^T.

From a = 1/T: pick the task t with the smallest (M a)_t, and move a towards e_t by the exact line-search step
gamma = (a.Ma - a.Me_t) / (a.Ma + e_t.Me_t - 2 a.Me_t), clipped to [0, 1]; stop when gamma < epsilon or after
max_iters. The update is T G^T a (T times the min-norm point: minbert's combiners are on the sum's scale).
"""

from __future__ import annotations

from typing import Annotated

import torch

from minbert.combiners.base import Combiner, combine, gramian
from minbert.config import ge, within


def min_norm_weights(M: torch.Tensor, epsilon: float = 1e-3, max_iters: int = 100) -> torch.Tensor:
    T = M.shape[0]
    a = torch.full((T,), 1.0 / T, dtype=M.dtype)
    for _ in range(max_iters):
        t = int(torch.argmin(M @ a))
        e = torch.zeros(T, dtype=M.dtype)
        e[t] = 1.0
        aa, ae, ee = a @ M @ a, a @ M @ e, e @ M @ e
        gamma = 1.0 if ee <= ae else 0.0 if aa <= ae else float((aa - ae) / (aa + ee - 2 * ae))
        a = (1 - gamma) * a + gamma * e
        if gamma < epsilon:
            break
    return a


class MGDA(Combiner):
    def __init__(self, epsilon: Annotated[float, within(0, 1, "(]")] = 1e-3, max_iters: Annotated[int, ge(1)] = 100):
        self.epsilon, self.max_iters = epsilon, max_iters

    def __call__(self, grads, rng, names=None):
        a = min_norm_weights(gramian(grads), self.epsilon, self.max_iters)
        return combine(grads, grads.shape[0] * a)
