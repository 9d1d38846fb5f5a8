"""Proportional sampling: each step one task, drawn with probability p_i = N_i / sum_j N_j."""

import random

from minbert.sampling.base import Plan, Sampler


def weighted_tasks(weights: dict[str, float], steps: int, seed: int) -> Plan:
    rng = random.Random(seed)
    names = list(weights)
    return [(t,) for t in rng.choices(names, weights=[weights[t] for t in names], k=steps)]


class Proportional(Sampler):
    def __call__(self, sizes, batches, epoch, epochs, steps, seed):
        return weighted_tasks({t: float(n) for t, n in sizes.items()}, steps or sum(batches.values()), seed + epoch)
