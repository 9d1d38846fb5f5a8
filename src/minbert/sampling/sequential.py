"""One task after another: a full pass over the first task's data, then the next (can forget earlier tasks)."""

from minbert.sampling.base import Sampler


class Sequential(Sampler):
    def __call__(self, sizes, batches, epoch, epochs, steps, seed):
        order = [(t,) for t in batches for _ in range(batches[t])]
        return order[:steps] if steps else order
