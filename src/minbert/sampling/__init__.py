"""Task sampling: which task(s) each training step draws a batch from (the config's `schedule`, its settings
`schedule_args`; learning-rate schedules are `lr_schedules/`).

A sampler is a `Sampler` (sampling/base.py) returning, for each step of one epoch, the tasks that contribute a batch
to it (round-robin: all of them, summed; the others: one - by data size, annealed, by a temperature, or by the
config's own probabilities). Built with `registry.build(SAMPLERS, name, args)`.
"""

from __future__ import annotations

from minbert.sampling.annealed import Annealed
from minbert.sampling.base import Sampler
from minbert.sampling.proportional import Proportional
from minbert.sampling.round_robin import RoundRobin
from minbert.sampling.sequential import Sequential
from minbert.sampling.temperature import Temperature
from minbert.sampling.weighted import Weighted

SAMPLERS: dict[str, type[Sampler]] = {
    "sequential": Sequential,
    "round_robin": RoundRobin,
    "proportional": Proportional,
    "annealed": Annealed,
    "temperature": Temperature,
    "weighted": Weighted,
}
