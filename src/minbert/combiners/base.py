"""What every gradient combiner is: `combiner(G, rng) -> g` for the (T, P) per-task gradient rows G; a stateful one
(GradVac's EMA targets) overrides `state_dict()` / `load_state_dict()` from `registry.Extension`."""

from __future__ import annotations

import random

import torch

from minbert.registry import Extension


class Combiner(Extension):
    def __call__(self, grads: torch.Tensor, rng: random.Random, names: list[str] | None = None) -> torch.Tensor:
        """G (T, P) -> g (P,); `names` the tasks of G's rows (None: known by their index)."""
        raise NotImplementedError

    def bind(self, parameters: list[tuple[str, int]]) -> None:
        """Before the first step: the shared parameters G's columns hold, in order, as (name, number of values)."""

    def epoch_record(self) -> dict[str, float]:
        """What the combiner did this epoch, to log (then reset)."""
        return {}
