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
    when the head output carries them.

    `mnrl_hinge` (the subclass below) is report 000's version (section 4.4): for each positive pair i of the k in
    the batch, with s_ij = cos(u_i, v_j) and the other pairs' partners as its K - 1 = k - 1 negatives,

        J_i = (1 / K) [ReLU(1 - s_ii) + ReLU(1 - s_ii + sum_{j != i} s_ij)]

    averaged over i (the report writes dot products a^T b of its sentence embeddings; here they are the cosines, on
    the same scale as the other losses of the pair). `scale` is the softmax form's alone."""

    needs = "embeddings"
    in_batch = True
    form = "softmax"

    def __init__(
        self,
        scale: Annotated[float, gt(0)] = 20.0,
        threshold: Annotated[float, ge(0, "on the label scale")] = 0.5,
    ):
        super().__init__()
        self.scale, self.threshold = scale, threshold

    def forward(self, out, labels):
        keep = labels >= self.threshold
        u, v = out.u[keep].float(), out.v[keep].float()
        if u.shape[0] < 2:  # no negatives in this batch
            return out.u.sum() * 0.0
        cos = F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T  # (k, k)
        scores = self.scale * cos
        same = None
        if out.keys is not None:
            ku, kv = out.keys.chunk(2)  # (B,) each
            ku, kv = ku[keep], kv[keep]
            pair = torch.stack([ku, kv], 1)  # (k, 2): each pair's two texts
            same = (pair[:, None, :, None] == pair[None, :, None, :]).flatten(2).any(-1)  # (k, k): a text shared
            same.fill_diagonal_(False)
            scores = scores.masked_fill(same, float("-inf"))
        if self.form == "hinge":
            k = u.shape[0]
            negatives = cos.masked_fill(torch.eye(k, dtype=torch.bool, device=cos.device), 0.0)
            if same is not None:
                negatives = negatives.masked_fill(same, 0.0)
            positive = cos.diagonal()
            return ((F.relu(1 - positive) + F.relu(1 - positive + negatives.sum(1))) / k).mean()
        return F.cross_entropy(scores, torch.arange(u.shape[0], device=u.device))


class HingeMultipleNegativesRanking(MultipleNegativesRanking):
    """Report 000's multiple negatives ranking loss (section 4.4), the hinge form above: `mnrl_hinge`."""

    form = "hinge"

    def __init__(self, threshold: Annotated[float, ge(0, "on the label scale")] = 0.5):
        super().__init__(threshold=threshold)
