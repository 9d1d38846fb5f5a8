"""Loss weightings: how a step's task losses are weighted before its one backward (the config's `weighting`, its
settings `weighting_args`) - the methods that balance tasks at the cost of one summed step, where the combiners
(`combiners/`) need one backward per task.

A weighting is a `Weighting` (weighting/base.py): from the step's task losses (their values, all-reduced across
processes) it gives each task's multiplier w_i; the step minimizes sum_i w_i L_i, so the gradient is sum_i w_i g_i,
on the per-task path too (each task's gradient row times its w_i before the combiner). What it learns (UW's and
IMTL-L's log-scales, DWA's loss history) it updates after the step from the same loss values, and keeps in the
run's checkpoints. Built with `registry.build(WEIGHTINGS, name, args)`.
"""

from __future__ import annotations

from minbert.weighting.base import Equal, Weighting
from minbert.weighting.db_mtl import DBMTL
from minbert.weighting.dwa import DWA
from minbert.weighting.famo import FAMO
from minbert.weighting.gls import GLS
from minbert.weighting.imtl_l import IMTLL
from minbert.weighting.rlw import RLW
from minbert.weighting.uw import UW

WEIGHTINGS: dict[str, type[Weighting]] = {
    "equal": Equal,
    "uw": UW,
    "dwa": DWA,
    "rlw": RLW,
    "gls": GLS,
    "imtl_l": IMTLL,
    "db_mtl": DBMTL,
    "famo": FAMO,
}
