"""Gradient combiners: per-task gradients of the shared parameters, stacked as G (T, P), in; one (P,) gradient out.

A combiner never sees the model. The training loop computes one task's backward at a time, moves the shared
parameters' gradient into a row of G, and writes `combiner(G, rng)` back; task-specific parameters (heads, PALs)
keep their own task's gradient untouched. `sum` is plain summing (and lets the loop skip building G at all).
Each is a `Combiner` (combiners/base.py); stateful ones (GradVac's EMA targets) override `state_dict()` /
`load_state_dict()` for checkpoints. Built with `registry.build(COMBINERS, name, args)`.
"""

from __future__ import annotations

from minbert.combiners.base import Combiner
from minbert.combiners.gradvac import GradVac
from minbert.combiners.pcgrad import PCGrad
from minbert.combiners.sum import Sum

COMBINERS: dict[str, type[Combiner]] = {"sum": Sum, "pcgrad": PCGrad, "gradvac": GradVac}
