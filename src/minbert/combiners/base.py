"""What every gradient combiner is: `combiner(G, rng) -> g` for the (T, P) per-task gradient rows G; a stateful one
(GradVac's EMA targets) overrides `state_dict()` / `load_state_dict()` from `registry.Extension`."""

from __future__ import annotations

import random

import torch

from minbert.registry import Extension


class Combiner(Extension):
    def __call__(self, grads: torch.Tensor, rng: random.Random) -> torch.Tensor:
        raise NotImplementedError
