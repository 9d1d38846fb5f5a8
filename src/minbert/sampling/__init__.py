"""Task sampling: which task(s) each training step draws a batch from (the config's `schedule`; learning-rate
schedules are `lr_schedules/`).

A sampler is a function `(sizes, batches, epoch, epochs, steps, seed, /, **settings) -> list[tuple[str, ...]]`
returning, for each step of one epoch, the tasks that contribute a batch to it (round-robin: all of them, summed; the
others: one). Its data arguments are positional-only; its keyword settings (annealed's `decay`) come from the config's
`schedule_args`, ranges declared like every technique's.
It is a pure function of its arguments, seeded by `seed + epoch`, so a resumed run replays the same order.

- sizes: training examples per task (N_i); batches: batches in one pass over each task's data
- epoch: 1-based; epochs: total E; steps: steps in this epoch, 0 = the sampler's natural length
"""

from __future__ import annotations

from typing import Protocol

from minbert.sampling.annealed import annealed
from minbert.sampling.proportional import proportional
from minbert.sampling.round_robin import round_robin
from minbert.sampling.sequential import sequential


class Sampler(Protocol):
    def __call__(
        self, sizes: dict[str, int], batches: dict[str, int], epoch: int, epochs: int, steps: int, seed: int, /
    ) -> list[tuple[str, ...]]: ...


SAMPLERS: dict[str, Sampler] = {
    "sequential": sequential,
    "round_robin": round_robin,
    "proportional": proportional,
    "annealed": annealed,
}
