"""Dynamic weight average, DWA (Liu et al. 2019, "End-to-End Multi-Task Learning with Attention", eq. 1; LibMTL's
`DWA`): a task whose loss fell less over the last epoch gets more weight,

    w_i = T exp(r_i / temperature) / sum_j exp(r_j / temperature),   r_i = Lbar_i(e - 1) / Lbar_i(e - 2),

with Lbar_i(e) task i's mean training loss in epoch e; 1 in the first two epochs. The epoch means are the weighting's
own record of the losses it saw (kept in checkpoints).
"""

from __future__ import annotations

import math
from typing import Annotated

from minbert.config import gt
from minbert.weighting.base import Weighting


class DWA(Weighting):
    def __init__(self, temperature: Annotated[float, gt(0)] = 2.0):
        self.temperature = temperature
        self.history: list[dict[str, float]] = []  # each finished epoch's mean loss per task
        self.sums: dict[str, list[float]] = {}

    def current(self) -> dict[str, float]:
        if len(self.history) < 2:
            return dict.fromkeys(self.tasks, 1.0)
        last, before = self.history[-1], self.history[-2]
        r = {n: last[n] / before[n] if last.get(n) and before.get(n) else 1.0 for n in self.tasks}
        z = {n: math.exp(x / self.temperature) for n, x in r.items()}
        total = sum(z.values())
        return {n: len(self.tasks) * z[n] / total for n in self.tasks}

    def weights(self, losses, step):
        w = self.current()
        return {n: w[n] for n in losses}

    def learn(self, losses, after=None):
        for n, loss in losses.items():
            acc = self.sums.setdefault(n, [0.0, 0])
            acc[0] += loss
            acc[1] += 1

    def epoch_record(self):
        self.history.append({n: a / c for n, (a, c) in self.sums.items() if c})
        self.sums = {}
        return {}

    def state_dict(self):
        return {"history": self.history, "sums": self.sums}

    def load_state_dict(self, state):
        self.history = [dict(h) for h in state["history"]]
        self.sums = {n: list(v) for n, v in state["sums"].items()}
