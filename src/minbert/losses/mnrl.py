from typing import Annotated

import torch
import torch.nn.functional as F

from minbert.config import ge, gt
from minbert.losses.base import Loss


class MultipleNegativesRanking(Loss):
    """Multiple negatives ranking loss (Henderson et al. 2017; sentence-transformers' MultipleNegativesRankingLoss;
    reports 000, 001): over the batch's positive pairs (label >= threshold), score every first sentence against
    every second one, s_ij = scale * cos(u_i, v_j), and take cross-entropy towards the diagonal, so each pair's
    partner must outrank the other pairs' partners (in-batch negatives).

    A pair j (j != i) that shares a text with pair i - either of its sentences equal to either of pair i's - is not
    a negative of pair i (Quora repeats questions across pairs: 10.5% of its positive pairs share their first
    question with another pair, whose partner is then a paraphrase too, and length bucketing puts equal texts in
    one batch): its score is masked out, the batches sentence-transformers' NoDuplicatesBatchSampler would have
    drawn. The texts are compared through the batch's sentence keys (`out.keys`, first sentences then seconds)
    when the head output carries them."""

    needs = "embeddings"
    in_batch = True

    def __init__(
        self, scale: Annotated[float, gt(0)] = 20.0, threshold: Annotated[float, ge(0, "on the label scale")] = 0.5
    ):
        super().__init__()
        self.scale, self.threshold = scale, threshold

    def forward(self, out, labels):
        keep = labels >= self.threshold
        u, v = out.u[keep].float(), out.v[keep].float()
        if u.shape[0] < 2:  # no negatives in this batch
            return out.u.sum() * 0.0
        scores = self.scale * F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T  # (k, k)
        if out.keys is not None:
            ku, kv = out.keys.chunk(2)  # (B,) each
            ku, kv = ku[keep], kv[keep]
            pair = torch.stack([ku, kv], 1)  # (k, 2): each pair's two texts
            same = (pair[:, None, :, None] == pair[None, :, None, :]).flatten(2).any(-1)  # (k, k): a text shared
            same.fill_diagonal_(False)
            scores = scores.masked_fill(same, float("-inf"))
        return F.cross_entropy(scores, torch.arange(u.shape[0], device=u.device))
