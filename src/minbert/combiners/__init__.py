"""Gradient combiners: per-task gradients of the shared parameters, stacked as G (T, P), in; one (P,) gradient out.

A combiner never sees the model. The training loop computes one task's backward at a time, moves the shared
parameters' gradient into a row of G, and writes `combiner(G, rng)` back; task-specific parameters (heads, PALs)
keep their own task's gradient untouched. `sum` is plain summing (and lets the loop skip building G at all).
Stateful combiners (GradVac's EMA targets) expose `state_dict()` / `load_state_dict()` for checkpoints.
"""

from __future__ import annotations

import random
from typing import Callable, Protocol

import torch

from minbert.combiners.gradvac import GradVac
from minbert.combiners.pcgrad import PCGrad
from minbert.combiners.sum import Sum


class Combiner(Protocol):
    def __call__(self, grads: torch.Tensor, rng: random.Random) -> torch.Tensor: ...


COMBINERS: dict[str, Callable[..., Combiner]] = {"sum": Sum, "pcgrad": PCGrad, "gradvac": GradVac}
