"""CAGrad, conflict-averse gradient descent (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task
Learning", Algorithm 1): the update that improves the worst task most while staying within c |g_0| of the average
gradient g_0 = G^T 1 / T.

Its dual: min over w in the simplex of  g_w . g_0 + sqrt(phi) |g_w|,  g_w = G^T w,  sqrt(phi) = c |g_0|;  then
d = g_0 + (sqrt(phi) / |g_w|) g_w. Everything is a function of the Gramian M = G G^T: with M = R R^T (R from its
SVD), g_w . g_0 = w^T R R^T 1 / T and |g_w| = |R^T w|. The program is solved with cvxpy (CLARABEL), as TorchJD's
`CAGrad` does (the official code used scipy's SLSQP); M is divided by its trace first, which changes no weight (the
problem is homogeneous in M) but keeps the solver in range. The update is T d (the sum's scale); the official code's
optional rescaling by 1 + c^2 is left out, as in LibMTL's and TorchJD's default.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch

from minbert.combiners.base import Combiner, combine, gramian, normalized, solver
from minbert.config import ge


class CAGrad(Combiner):
    requires = ("cvxpy", "clarabel")  # the mtl extra

    def __init__(self, c: Annotated[float, ge(0)] = 0.4, norm_eps: Annotated[float, ge(0)] = 1e-4):
        self.c, self.norm_eps = c, norm_eps
        self.cp = solver("cvxpy", "cagrad")

    def weights(self, M: torch.Tensor) -> torch.Tensor:
        T, cp = M.shape[0], self.cp
        M = normalized(M, self.norm_eps)
        U, S, _ = torch.svd(M)
        R = (U @ S.sqrt().diag()).numpy()  # R R^T = M
        g0 = R.T @ np.ones(T) / T  # the average gradient, in R's coordinates
        sqrt_phi = self.c * float(np.linalg.norm(g0))
        w = cp.Variable(T)
        cost = (R @ g0) @ w + sqrt_phi * cp.norm(R.T @ w, 2)
        cp.Problem(cp.Minimize(cost), [w >= 0, cp.sum(w) == 1]).solve(cp.CLARABEL)
        gw_norm = float(np.linalg.norm(R.T @ w.value))
        if gw_norm < self.norm_eps:
            return torch.zeros(T, dtype=torch.float64)
        return torch.from_numpy(np.ones(T) / T + (sqrt_phi / gw_norm) * w.value)

    def __call__(self, grads, rng, names=None):
        return combine(grads, grads.shape[0] * self.weights(gramian(grads)))
