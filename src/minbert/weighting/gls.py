"""Geometric loss strategy, GLS (Chennupati et al. 2019, "MultiNet++", eq. 2; LibMTL's `GLS`): minimize the
geometric mean of the step's task losses, (prod_i L_i)^(1/T). Its gradient is sum_i w_i g_i with

    w_i = (prod_j L_j)^(1/T) / (T L_i),

a task with a small loss weighed up. T is the number of tasks in the step (with one task, its loss as it is).
"""

from __future__ import annotations

import math

from minbert.weighting.base import Weighting


class GLS(Weighting):
    compares = True

    def weights(self, losses, step):
        T = len(losses)
        mean = math.exp(sum(math.log(max(v, 1e-12)) for v in losses.values()) / T)
        return {n: mean / (T * max(v, 1e-12)) for n, v in losses.items()}
