"""Annealed sampling (Stickland & Murray 2019, report 001): p_i proportional to N_i^alpha with
alpha = 1 - decay (e - 1) / (E - 1), so large tasks dominate early and sampling evens out towards the last epoch
(the paper's decay is 0.8: `schedule_args: {decay: 0.8}`)."""

from typing import Annotated

from minbert.config import within
from minbert.sampling.base import Sampler
from minbert.sampling.proportional import weighted_tasks


def alpha(epoch: int, epochs: int, decay: float = 0.8) -> float:
    return 1.0 if epochs <= 1 else 1.0 - decay * (epoch - 1) / (epochs - 1)


class Annealed(Sampler):
    def __init__(self, decay: Annotated[float, within(0, 1)] = 0.8):
        self.decay = decay

    def __call__(self, sizes, batches, epoch, epochs, steps, seed):
        a = alpha(epoch, epochs, self.decay)
        return weighted_tasks(
            {t: float(n) ** a for t, n in sizes.items()}, steps or sum(batches.values()), seed + epoch
        )
