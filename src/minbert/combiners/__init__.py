"""Gradient combiners: per-task gradients of the shared parameters, stacked as G (T, P), in; one (P,) gradient out.

A combiner never sees the model. The training loop computes one task's backward at a time, moves the shared
parameters' gradient into a row of G, and writes `combiner(G, rng)` back; task-specific parameters (heads, PALs)
keep their own task's gradient untouched. `sum` is plain summing (and lets the loop skip building G at all); the
reports' PCGrad and GradVac project conflicting rows; UPGrad, MGDA, CAGrad, Nash-MTL, IMTL-G and Aligned-MTL weight
the rows from their Gramian G G^T (each file names its paper; tests/test_combiners_reference.py checks each against
TorchJD). The solver-based ones need the `mtl` extra (quadprog, cvxpy).
Each is a `Combiner` (combiners/base.py); stateful ones (GradVac's EMA targets) override `state_dict()` /
`load_state_dict()` for checkpoints. Built with `registry.build(COMBINERS, name, args)`.
"""

from __future__ import annotations

from minbert.combiners.aligned_mtl import AlignedMTL
from minbert.combiners.base import Combiner
from minbert.combiners.cagrad import CAGrad
from minbert.combiners.gradvac import GradVac
from minbert.combiners.imtl_g import IMTLG
from minbert.combiners.mgda import MGDA
from minbert.combiners.nash_mtl import NashMTL
from minbert.combiners.pcgrad import PCGrad
from minbert.combiners.sum import Sum
from minbert.combiners.upgrad import UPGrad

COMBINERS: dict[str, type[Combiner]] = {
    "sum": Sum,
    "pcgrad": PCGrad,
    "gradvac": GradVac,
    "upgrad": UPGrad,
    "mgda": MGDA,
    "cagrad": CAGrad,
    "nash_mtl": NashMTL,
    "imtl_g": IMTLG,
    "aligned_mtl": AlignedMTL,
}
