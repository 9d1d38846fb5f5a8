"""Temperature sampling (the multilingual models' and jiant's mixing; Arivazhagan et al. 2019, Raffel et al. 2020
section 3.5.2): each step one task, drawn with probability p_i proportional to min(N_i, cap)^(1/T). T = 1 is
proportional sampling, a large T evens the tasks out (uniform as T grows); `cap` (0: none) bounds how many examples a
large task counts with - T5's "examples-proportional mixing" with its limit K."""

from typing import Annotated

from minbert.config import ge, gt
from minbert.sampling.base import Sampler
from minbert.sampling.proportional import weighted_tasks


class Temperature(Sampler):
    def __init__(self, T: Annotated[float, gt(0)] = 2.0, cap: Annotated[int, ge(0, "0 = none")] = 0):
        self.T, self.cap = T, cap

    def probabilities(self, sizes: dict[str, int]) -> dict[str, float]:
        w = {t: float(min(n, self.cap) if self.cap else n) ** (1 / self.T) for t, n in sizes.items()}
        total = sum(w.values())
        return {t: v / total for t, v in w.items()}

    def __call__(self, sizes, batches, epoch, epochs, steps, seed):
        return weighted_tasks(self.probabilities(sizes), steps or sum(batches.values()), seed + epoch)
