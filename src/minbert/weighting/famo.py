"""FAMO, fast adaptive multitask optimization (Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization",
Algorithm 1; the official code, Cranial-XIX/FAMO, and LibMTL's `FAMO`): task weights z = softmax(xi) that raise the
task whose loss is falling slowest, at the cost of one forward pass more per step.

Each step minimizes sum_i z_i log(D_i) / c with D_i = L_i - l_i + 1e-8 (l_i: the task's lowest reachable loss, 0
here) and c = sum_j z_j / D_j held fixed, so the model's gradient weighs task i by z_i / (c D_i) - times the step's
number of tasks here, on minbert's summed scale (the weights z_i / (c D_i) D_i sum to 1). The sums run over the tasks
of the step: with one task, z cancels and its weight is 1, the plain loss (a schedule of one task per step gives
FAMO nothing to compare). After the update, the same batches' losses L' give each task's log-loss decrease
delta_i = log D_i - log D'_i, and the logits xi take one Adam step (lr `lr`, L2 weight decay `gamma`, as
torch.optim.Adam) on the gradient J_softmax(xi)^T delta. Tasks not in a step have delta 0.
"""

from __future__ import annotations

from typing import Annotated

import torch

from minbert.config import ge, gt
from minbert.weighting.base import Adam, Weighting


class FAMO(Weighting):
    compares = True
    after = True

    def __init__(self, lr: Annotated[float, gt(0)] = 0.025, gamma: Annotated[float, ge(0)] = 1e-3):
        self.lr, self.gamma = lr, gamma

    def bind(self, tasks):
        super().bind(tasks)
        self.xi = torch.zeros(len(tasks), dtype=torch.float64)
        self.opt = Adam(len(tasks), self.lr, weight_decay=self.gamma)

    def weights(self, losses, step):
        z = torch.softmax(self.xi, 0)
        idx = [self.tasks.index(n) for n in losses]
        D = torch.tensor([losses[n] for n in losses], dtype=torch.float64) + 1e-8
        c = (z[idx] / D).sum()
        return {n: float(len(losses) * z[i] / (c * d)) for n, i, d in zip(losses, idx, D)}

    def learn(self, losses, after=None):
        delta = torch.zeros_like(self.xi)
        for n, loss in losses.items():
            delta[self.tasks.index(n)] = torch.log(torch.tensor(loss + 1e-8)) - torch.log(torch.tensor(after[n] + 1e-8))
        z = torch.softmax(self.xi, 0)
        grad = z * delta - z * (z @ delta)  # the softmax's Jacobian (symmetric) times delta
        self.xi = self.opt.step(self.xi, grad)

    def state_dict(self):
        return {"xi": self.xi.tolist(), "adam": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.xi = torch.tensor(state["xi"], dtype=torch.float64)
        self.opt.load_state_dict(state["adam"])
