"""Uncertainty weighting, UW (Kendall et al. 2018, "Multi-Task Learning Using Uncertainty to Weigh Losses", eq. 7
in the form LibMTL implements): each task has a learned log-variance s_i and the objective is

    sum_i  L_i / (2 exp(s_i)) + s_i / 2,

so the model's gradient weighs task i by w_i = 1 / (2 exp(s_i)), and s_i descends d/ds_i = 1/2 - L_i / (2 exp(s_i))
(s_i settles where exp(s_i) = L_i: a task with a large loss is weighed down). s_i starts at -0.5 (LibMTL's `UW`,
w_i = 0.82) and moves by its own Adam at `lr`, after each step, on the step's losses.
"""

from __future__ import annotations

from typing import Annotated

import torch

from minbert.config import gt
from minbert.weighting.base import Adam, Weighting


class UW(Weighting):
    def __init__(self, lr: Annotated[float, gt(0)] = 0.025, init: float = -0.5):
        self.lr, self.init = lr, init

    def bind(self, tasks):
        super().bind(tasks)
        self.s = torch.full((len(tasks),), float(self.init), dtype=torch.float64)
        self.opt = Adam(len(tasks), self.lr)

    def weights(self, losses, step):
        return {n: float(1 / (2 * self.s[self.tasks.index(n)].exp())) for n in losses}

    def grad(self, losses: dict[str, float]) -> torch.Tensor:
        """d/ds of the objective for the tasks of the step (zero for the others)."""
        g = torch.zeros_like(self.s)
        for n, loss in losses.items():
            i = self.tasks.index(n)
            g[i] = 0.5 - loss / (2 * self.s[i].exp())
        return g

    def learn(self, losses, after=None):
        self.s = self.opt.step(self.s, self.grad(losses))

    def state_dict(self):
        return {"s": self.s.tolist(), "adam": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.s = torch.tensor(state["s"], dtype=torch.float64)
        self.opt.load_state_dict(state["adam"])
