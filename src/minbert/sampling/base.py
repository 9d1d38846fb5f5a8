"""What every task sampler is: `sampler(sizes, batches, epoch, epochs, steps, seed) -> plan`, the tasks each step of
one epoch draws a batch from."""

from __future__ import annotations

from minbert.registry import Extension

Plan = list[tuple[str, ...]]  # per step, the tasks that contribute a batch to it


class Sampler(Extension):
    """A pure function of its arguments once built (its settings, such as annealed's `decay`, come from the config's
    `schedule_args`), seeded by `seed + epoch`, so a resumed run replays the same order and keeps no state.

    - sizes: training examples per task (N_i); batches: batches in one pass over each task's data
    - epoch: 1-based; epochs: total E; steps: steps in this epoch, 0 = the sampler's natural length
    """

    together = False  # whether every step holds every task (what a combiner, GLS or FAMO compares)

    def __call__(
        self, sizes: dict[str, int], batches: dict[str, int], epoch: int, epochs: int, steps: int, seed: int
    ) -> Plan:
        raise NotImplementedError

    def check(self, tasks: list[str]) -> None:
        """Before any work (the config's check): settings that name tasks name the run's tasks."""
