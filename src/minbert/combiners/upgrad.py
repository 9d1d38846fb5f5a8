"""UPGrad, the unconflicting projection of gradients (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective
Optimization", eq. 4; TorchJD's `UPGrad`).

Each task gradient g_i is projected onto the dual cone of all the rows {x : g_j . x >= 0 for every j} - the
directions that conflict with no task - and the projections are summed. By the paper's Proposition 1 the projection
of G^T u is G^T v with v the solution of the quadratic program

    min_v  v^T M v   subject to  v >= u,      M = G G^T (the Gramian),

so each task costs one T x T QP (quadprog through qpsolvers) rather than work on P-sized vectors. As in the reference
code, M is first divided by its trace and 1e-4 is added to its diagonal (`reg_eps`: M is PSD only up to rounding).
The update is G^T sum_i v_i, where the i-th QP has u = e_i (TorchJD's preference vector of ones, i.e. the sum).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch

from minbert.combiners.base import Combiner, combine, gramian, normalized, solver
from minbert.config import ge


class UPGrad(Combiner):
    requires = ("qpsolvers", "quadprog")  # the mtl extra

    def __init__(self, norm_eps: Annotated[float, ge(0)] = 1e-4, reg_eps: Annotated[float, ge(0)] = 1e-4):
        self.norm_eps, self.reg_eps = norm_eps, reg_eps
        self.qp = solver("qpsolvers", "upgrad")

    def weights(self, M: torch.Tensor) -> torch.Tensor:
        T = M.shape[0]
        M = normalized(M, self.norm_eps) + self.reg_eps * torch.eye(T, dtype=M.dtype)
        P = M.numpy()
        vs = [self.qp.solve_qp(P, np.zeros(T), -np.eye(T), -np.eye(T)[i], solver="quadprog") for i in range(T)]
        if any(v is None for v in vs):
            raise FloatingPointError("upgrad: the dual-cone projection's QP failed (gradients not finite?)")
        return torch.from_numpy(np.sum(vs, axis=0))

    def __call__(self, grads, rng, names=None):
        return combine(grads, self.weights(gramian(grads)))
