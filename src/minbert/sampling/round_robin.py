"""Round-robin: every step takes one batch of every task and sums their losses. The natural epoch is one pass over
the largest task; smaller tasks restart their data when exhausted."""

from minbert.sampling.base import Sampler


class RoundRobin(Sampler):
    together = True

    def __call__(self, sizes, batches, epoch, epochs, steps, seed):
        return [tuple(batches)] * (steps or max(batches.values()))
