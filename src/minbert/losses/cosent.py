from typing import Annotated

import torch
import torch.nn.functional as F

from minbert.config import gt
from minbert.losses.base import Loss


class CoSENT(Loss):
    """CoSENT (Su 2022; sentence-transformers' CoSENTLoss): a ranking loss over the batch's pairs that asks only that
    a pair with a higher label gets a higher cosine, log(1 + sum over label_i < label_j of exp(scale (cos_i -
    cos_j))), instead of regressing each cosine onto its label. It trains the bi-encoder's cosine directly, so it
    suits a cosine head, whose prediction is that cosine on the label scale (a monotone map: ranking is what
    Pearson and Spearman reward)."""

    needs = "embeddings"
    in_batch = True

    def __init__(self, scale: Annotated[float, gt(0)] = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, out, labels):
        cos = F.cosine_similarity(out.u.float(), out.v.float(), dim=-1)  # (B,)
        diff = self.scale * (cos[:, None] - cos[None, :])  # (B, B): s_i - s_j
        lower = labels[:, None] < labels[None, :]  # (B, B): pair i should score below pair j
        diff = diff.masked_fill(~lower, float("-inf"))
        return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), dim=0)
