"""Annealed sampling (Stickland & Murray 2019, report 001): p_i proportional to N_i^alpha with
alpha = 1 - 0.8 (e - 1) / (E - 1), so large tasks dominate early and sampling evens out towards the last epoch."""

from minbert.sampling.proportional import weighted_tasks


def alpha(epoch: int, epochs: int) -> float:
    return 1.0 if epochs <= 1 else 1.0 - 0.8 * (epoch - 1) / (epochs - 1)


def annealed(sizes, batches, epoch, epochs, steps, seed):
    a = alpha(epoch, epochs)
    return weighted_tasks({t: float(n) ** a for t, n in sizes.items()}, steps or sum(batches.values()), seed + epoch)
