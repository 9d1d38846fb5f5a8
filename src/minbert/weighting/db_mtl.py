"""DB-MTL's loss-scale balance (Lin et al. 2023, "Dual-Balancing for Multi-Task Learning", section 3.1; LibMTL's
`DB_MTL`): train on log(L_i + eps) in place of L_i, which makes every task's loss scale-free. Its gradient is
g_i / (L_i + eps): w_i = 1 / (L_i + eps).

DB-MTL's second half, rescaling every task's (EMA) gradient to the largest norm, is a gradient-level step and not
part of this weighting.
"""

from __future__ import annotations

from typing import Annotated

from minbert.config import gt
from minbert.weighting.base import Weighting


class DBMTL(Weighting):
    def __init__(self, eps: Annotated[float, gt(0)] = 1e-8):
        self.eps = eps

    def weights(self, losses, step):
        return {n: 1 / (v + self.eps) for n, v in losses.items()}
