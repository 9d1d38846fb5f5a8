"""What every loss weighting is: `weights(losses, step) -> {task: w}` for the tasks of a step, `learn(losses)`
after it, and its state for checkpoints (`state_dict` / `load_state_dict`: JSON-able, from `registry.Extension`).

Scale: on minbert's summed scale, as the combiners - equal weights are all 1 (the plain summed loss), and a method
whose reference normalizes its weights to sum to 1 (RLW) is multiplied by the number of tasks T.
"""

from __future__ import annotations

import torch

from minbert.registry import Extension


class Weighting(Extension):
    def bind(self, tasks: list[str]) -> None:
        """Before the first step: every task of the run, in order (a learned weighting sizes its state here)."""
        self.tasks = list(tasks)

    def weights(self, losses: dict[str, float], step: int) -> dict[str, float]:
        """Each task's multiplier for this step, from the step's loss values (tasks not in the step absent)."""
        return dict.fromkeys(losses, 1.0)

    after = False  # whether `learn` needs the step's tasks' losses again, after the update (FAMO)
    compares = False  # whether its weights compare the tasks of one step (GLS, FAMO: with one task, the plain loss)

    def learn(self, losses: dict[str, float], after: dict[str, float] | None = None) -> None:
        """After the optimizer step: update what the weighting learns from the step's loss values (and, where
        `after` is set, the same batches' losses under the updated weights)."""

    def epoch_record(self) -> dict[str, float]:
        """What to log at an epoch's end (then reset)."""
        return {}


class Equal(Weighting):
    """Every task's loss as it is: the summed loss (the default; nothing is computed)."""


class Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1) on a small vector of learned weights, its state a plain dict (JSON in a
    checkpoint, bit-exact on resume): the weightings' own optimizer, apart from the model's AdamW as LibMTL's FAMO
    keeps its own, so a run's learning rate does not also set how fast task weights move."""

    def __init__(self, size: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m, self.v, self.t = [0.0] * size, [0.0] * size, 0

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """x after one step on `grad` (with torch.optim.Adam's L2 weight decay: grad + weight_decay x)."""
        b1, b2 = self.betas
        self.t += 1
        grad = grad + self.weight_decay * x
        m = b1 * torch.tensor(self.m, dtype=torch.float64) + (1 - b1) * grad
        v = b2 * torch.tensor(self.v, dtype=torch.float64) + (1 - b2) * grad * grad
        self.m, self.v = m.tolist(), v.tolist()
        m_hat, v_hat = m / (1 - b1**self.t), v / (1 - b2**self.t)
        return x - self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v, self.t = list(state["m"]), list(state["v"]), int(state["t"])
