"""Explicit mixing: each step one task, drawn with the probabilities the config gives (`schedule_args:
{probabilities: {sst: 0.5, quora: 0.2, sts: 0.3}}`, normalized to sum to 1). Every task of the run needs one above
0: a task never drawn would never train."""

from minbert.errors import MinbertError
from minbert.sampling.base import Sampler
from minbert.sampling.proportional import weighted_tasks


class Weighted(Sampler):
    def __init__(self, probabilities: dict[str, float] | None = None):
        self.given = dict(probabilities or {})
        for t, p in self.given.items():
            if not (p > 0 and p < float("inf")):
                raise MinbertError(
                    f"schedule_args.probabilities.{t}: {p} must be > 0 (a task never drawn never trains)"
                )

    def check(self, tasks: list[str]) -> None:
        unknown = sorted(set(self.given) - set(tasks))
        missing = [t for t in tasks if t not in self.given]
        if unknown or missing:
            raise MinbertError(
                "schedule_args.probabilities: "
                + (f"{', '.join(unknown)} not among this run's tasks; " if unknown else "")
                + (f"no probability for {', '.join(missing)}; " if missing else "")
                + f"give one for each of {', '.join(tasks)}"
            )

    def probabilities(self, sizes: dict[str, int]) -> dict[str, float]:
        self.check(list(sizes))
        total = sum(self.given.values())
        return {t: self.given[t] / total for t in sizes}

    def __call__(self, sizes, batches, epoch, epochs, steps, seed):
        return weighted_tasks(self.probabilities(sizes), steps or sum(batches.values()), seed + epoch)
