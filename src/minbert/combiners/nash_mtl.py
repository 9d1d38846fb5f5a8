"""Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", Algorithm 1): the update G^T a whose
weights solve the Nash bargaining condition  (G G^T) a = 1 / a  (each task's gain times its weight is 1), found by
the paper's sequence of convex programs (section 3.2's linearization of phi(a) = sum_i log a_i + log (G a)_i).

As the official code (AvivNavon/nash-mtl) and TorchJD's `NashMTL`: the Gramian is divided by its Frobenius norm;
each step runs up to `optim_niter` cvxpy (ECOS) solves of

    min_a  sum(M a) + phi'(a_prev) . (a - a_prev) / n   subject to  -log(a_i n) - log((M a)_i) <= 0,  a >= 0,

starting from the last step's weights (the state a checkpoint keeps), stopping when |M a - 1/a| < 1e-3 or a stops
moving; the weights are recomputed every `update_every` steps; and the update's norm is clipped to `max_norm` (0:
not clipped). The weights are the method's own (not rescaled to the sum): they solve an equation, not a
convex combination.
"""

from __future__ import annotations

import warnings
from typing import Annotated

import numpy as np
import torch

from minbert.combiners.base import Combiner, combine, gramian, solver
from minbert.config import ge


class NashMTL(Combiner):
    requires = ("cvxpy", "ecos")  # the mtl extra

    def __init__(
        self,
        max_norm: Annotated[float, ge(0)] = 1.0,
        update_every: Annotated[int, ge(1)] = 1,
        optim_niter: Annotated[int, ge(1)] = 20,
    ):
        self.max_norm, self.update_every, self.optim_niter = max_norm, update_every, optim_niter
        self.cp = solver("cvxpy", "nash_mtl")
        self.step = 0
        self.alpha: np.ndarray | None = None  # the last weights (float32, as the reference keeps them)
        self.prob = None

    def _build(self, T: int) -> None:
        cp = self.cp
        self.a = cp.Variable(shape=(T,), nonneg=True)
        self.a_prev = cp.Parameter(shape=(T,), value=np.ones(T, dtype=np.float32))
        self.M = cp.Parameter(shape=(T, T), value=np.eye(T))
        self.n = cp.Parameter(shape=(1,), value=np.array([1.0]))
        Ma_prev = self.M @ self.a_prev
        grad_phi = 1 / self.a_prev + (1 / Ma_prev) @ self.M  # phi's gradient at the previous weights
        Ma = self.M @ self.a
        constraints = [-cp.log(a * self.n) - cp.log(m) <= 0 for a, m in zip(self.a, Ma)]
        objective = cp.Minimize(cp.sum(Ma) + grad_phi @ (self.a - self.a_prev) / self.n)
        self.prob = cp.Problem(objective, constraints)

    def _solve(self, M: np.ndarray, norm: float) -> np.ndarray:
        self.M.value, self.n.value = M, np.array([norm])
        a = self.alpha
        for _ in range(self.optim_niter):
            self.a.value, self.a_prev.value = a, a
            try:
                with warnings.catch_warnings():  # "not DPP": a note on solve speed, for every solve
                    warnings.simplefilter("ignore", UserWarning)
                    self.prob.solve(solver=self.cp.ECOS, warm_start=True, max_iters=100)
            except (self.cp.SolverError, ValueError):
                self.a.value = self.a_prev.value
            done = (
                self.a.value is None
                or np.linalg.norm(M @ a - 1 / (a + 1e-10)) < 1e-3
                or np.linalg.norm(self.a.value - self.a_prev.value) < 1e-6
            )
            if done:
                break
            a = self.a.value
        if a is not None:
            self.alpha = a
        return self.alpha

    def __call__(self, grads, rng, names=None):
        T = grads.shape[0]
        if self.alpha is None or len(self.alpha) != T:
            self.alpha, self.step = np.ones(T, dtype=np.float32), 0
        if self.prob is None or self.a.shape != (T,):
            self._build(T)
        if self.step % self.update_every == 0:
            M = gramian(grads)
            norm = float(torch.linalg.norm(M))
            alpha = self._solve((M / norm).numpy(), norm)
        else:
            alpha = self.alpha
        self.step += 1
        w = torch.from_numpy(np.asarray(alpha)).to(grads.dtype)
        if self.max_norm > 0:
            size = torch.linalg.norm(w @ grads)
            if size > self.max_norm:
                w = w / size * self.max_norm
        return combine(grads, w)

    def state_dict(self) -> dict:
        alpha = None if self.alpha is None else [float(x) for x in self.alpha]
        return {"alpha": alpha, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        alpha = state.get("alpha")
        self.alpha = None if alpha is None else np.asarray(alpha, dtype=np.float64)
        self.step = int(state.get("step", 0))
