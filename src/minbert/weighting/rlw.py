"""Random loss weighting, RLW (Lin et al. 2022, "Reasonable Effectiveness of Random Weighting", section 3; LibMTL's
`RLW` with its default normal distribution): every step draws lambda ~ N(0, I) over the run's T tasks and weighs task
i by softmax(lambda)_i - times T here, so that the weights average to about 1, on minbert's summed scale.

The draw is seeded by the run's seed and the step (no state: a resumed run draws the same weights).
"""

from __future__ import annotations

import torch

from minbert.weighting.base import Weighting


class RLW(Weighting):
    def __init__(self, seed: int = 0):
        self.seed = seed

    def weights(self, losses, step):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        w = len(self.tasks) * torch.softmax(torch.randn(len(self.tasks), generator=g, dtype=torch.float64), 0)
        return {n: float(w[self.tasks.index(n)]) for n in losses}
