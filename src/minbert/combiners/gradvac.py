"""Gradient Vaccine (Wang et al. 2020, "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
Massively Multilingual Models", Algorithm 1 and eq. 3; report 003).

Each task pair (i, j) keeps an EMA target cosine phi_hat_ij (decay beta, starting at 0). For task i and each other
task j in random order, with phi = cos(g_i^PC, g_j): when phi < phi_hat_ij,

    g_i^PC <- g_i^PC + g_j * |g_i^PC| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (|g_j| sqrt(1 - phi_hat^2))

which makes cos(g_i^PC, g_j) exactly phi_hat; then phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi. The update is
sum_i g_i^PC. Report 003 prints this rule with typos (its line 14 misplaces a parenthesis and uses phi^(t) for
the target, and its EMA line reads (1 - beta) phi^(t) + beta phi^(t)); this file follows the paper's equation.

`groups` (optional) splits the P columns into parameter groups (e.g. one per layer), each with its own targets,
as the paper's per-component variant.
"""

from typing import Annotated

import torch

from minbert.combiners.base import Combiner
from minbert.config import within


class GradVac(Combiner):
    def __init__(self, beta: Annotated[float, within(0, 1)] = 0.01, groups: list[tuple[int, int]] | None = None):
        self.beta = beta
        self.groups = groups
        self.target: dict[str, float] = {}  # "i,j,group" -> phi_hat
        self.applied = 0  # how many (i, j) adjustments were made: report 003's "gradient fixes"

    def __call__(self, grads: torch.Tensor, rng) -> torch.Tensor:
        spans = self.groups or [(0, grads.shape[1])]
        out = grads.clone()
        T = grads.shape[0]
        for i in range(T):
            others = [j for j in range(T) if j != i]
            rng.shuffle(others)
            for j in others:
                for k, (a, b) in enumerate(spans):
                    self._vaccinate(out[i, a:b], grads[j, a:b], f"{i},{j},{k}")
        return out.sum(0)

    def _vaccinate(self, gi: torch.Tensor, gj: torch.Tensor, key: str) -> None:
        ni, nj = gi.norm(), gj.norm()
        if ni == 0 or nj == 0:
            return
        phi = float((gi @ gj) / (ni * nj))
        target = self.target.get(key, 0.0)
        if phi < target:
            coef = ni * (target * (1 - phi**2) ** 0.5 - phi * (1 - target**2) ** 0.5) / (nj * (1 - target**2) ** 0.5)
            gi += coef * gj  # in place: gi is a view of this task's row
            self.applied += 1
        self.target[key] = (1 - self.beta) * target + self.beta * phi

    def state_dict(self) -> dict:
        return {"target": dict(self.target), "applied": self.applied}

    def load_state_dict(self, state: dict) -> None:
        self.target = dict(state.get("target", {}))
        self.applied = state.get("applied", 0)
