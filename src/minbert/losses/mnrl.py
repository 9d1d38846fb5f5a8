from typing import Annotated

import torch
import torch.nn.functional as F

from minbert.config import gt, within
from minbert.losses.base import Loss


class MultipleNegativesRanking(Loss):
    """Multiple negatives ranking loss (Henderson et al. 2017; sentence-transformers' MultipleNegativesRankingLoss;
    reports 000, 001): over the batch's positive pairs (label >= threshold), score every first sentence against
    every second one, s_ij = scale * cos(u_i, v_j), and take cross-entropy towards the diagonal, so each pair's
    partner must outrank the other pairs' partners (in-batch negatives).

    A candidate v_j (j != i) whose text is v_i's or u_i's is not a negative of pair i (Quora repeats questions
    across pairs, and length bucketing puts equal texts in one batch): its score is masked out, as
    sentence-transformers avoids such batches with its NoDuplicatesBatchSampler. The texts are compared through
    the batch's sentence keys (`out["keys"]`, first sentences then seconds) when the head output carries them."""

    needs = "embeddings"
    in_batch = True

    def __init__(self, scale: Annotated[float, gt(0)] = 20.0, threshold: Annotated[float, within(0, 1)] = 0.5):
        super().__init__()
        self.scale, self.threshold = scale, threshold

    def forward(self, out, labels):
        keep = labels >= self.threshold
        u, v = out["u"][keep].float(), out["v"][keep].float()
        if u.shape[0] < 2:  # no negatives in this batch
            return out["u"].sum() * 0.0
        scores = self.scale * F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T  # (k, k)
        if out.get("keys") is not None:
            ku, kv = out["keys"].chunk(2)  # (B,) each
            ku, kv = ku[keep], kv[keep]
            same = (kv[None, :] == kv[:, None]) | (kv[None, :] == ku[:, None])  # (k, k): v_j repeats v_i or u_i
            same.fill_diagonal_(False)
            scores = scores.masked_fill(same, float("-inf"))
        return F.cross_entropy(scores, torch.arange(u.shape[0], device=u.device))
