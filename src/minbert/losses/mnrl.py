import torch
import torch.nn.functional as F
from torch import nn


class MultipleNegativesRanking(nn.Module):
    """Multiple negatives ranking loss (Henderson et al. 2017; sentence-transformers' MultipleNegativesRankingLoss;
    reports 000, 001): over the batch's positive pairs (label >= threshold), score every first sentence against
    every second one, s_ij = scale * cos(u_i, v_j), and take cross-entropy towards the diagonal, so each pair's
    partner must outrank the other pairs' partners (in-batch negatives)."""

    needs = "embeddings"

    def __init__(self, scale: float = 20.0, threshold: float = 0.5):
        super().__init__()
        self.scale, self.threshold = scale, threshold

    def forward(self, out, labels):
        keep = labels >= self.threshold
        u, v = out["u"][keep].float(), out["v"][keep].float()
        if u.shape[0] < 2:  # no negatives in this batch
            return out["u"].sum() * 0.0
        scores = self.scale * F.normalize(u, dim=-1) @ F.normalize(v, dim=-1).T  # (k, k)
        return F.cross_entropy(scores, torch.arange(u.shape[0], device=u.device))
