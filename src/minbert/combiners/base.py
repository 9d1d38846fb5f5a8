"""What every gradient combiner is: `combiner(G, rng) -> g` for the (T, P) per-task gradient rows G; a stateless
one keeps the no-op state methods."""

from __future__ import annotations

import random

import torch


class Combiner:
    def __call__(self, grads: torch.Tensor, rng: random.Random) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
