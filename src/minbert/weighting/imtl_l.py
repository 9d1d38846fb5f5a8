"""IMTL-L, impartial multi-task learning's loss balance (Liu et al. 2021, "Towards Impartial Multi-task Learning",
section 3.1, as LibMTL's `IMTL` implements its loss part): each task has a learned log-scale s_i and the objective is

    sum_i  exp(s_i) L_i - s_i,

so the model's gradient weighs task i by w_i = exp(s_i), and s_i descends d/ds_i = exp(s_i) L_i - 1 (it settles
where exp(s_i) L_i = 1: every scaled loss equal). s_i starts at 0 and moves by its own Adam at `lr` after each step.
The gradient half of IMTL is the combiner `imtl_g`.
"""

from __future__ import annotations

from typing import Annotated

import torch

from minbert.config import gt
from minbert.weighting.uw import UW


class IMTLL(UW):
    def __init__(self, lr: Annotated[float, gt(0)] = 0.025, init: float = 0.0):
        super().__init__(lr, init)

    def weights(self, losses, step):
        return {n: float(self.s[self.tasks.index(n)].exp()) for n in losses}

    def grad(self, losses):
        g = torch.zeros_like(self.s)
        for n, loss in losses.items():
            i = self.tasks.index(n)
            g[i] = self.s[i].exp() * loss - 1
        return g
