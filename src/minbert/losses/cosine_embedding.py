from typing import Annotated

import torch
import torch.nn.functional as F

from minbert.config import ge, within
from minbert.losses.base import Loss


class CosineEmbedding(Loss):
    """PyTorch's CosineEmbeddingLoss on bi-encoder pairs (reports 000, 004): a similar pair costs 1 - cos(u, v), a
    dissimilar one max(0, cos(u, v) - margin). A pair is similar when its label >= threshold (STS: 3, Quora: 1).
    `margin` is a plain attribute so a schedule (report 004's dynamic margin) can move it between epochs."""

    needs = "embeddings"

    def __init__(
        self,
        margin: Annotated[float, within(-1, 1)] = 0.0,
        threshold: Annotated[float, ge(0, "on the label scale")] = 0.5,
    ):
        super().__init__()
        self.margin = margin
        self.threshold = threshold

    def forward(self, out, labels):
        cos = F.cosine_similarity(out.u.float(), out.v.float(), dim=-1, eps=1e-8)
        similar = labels >= self.threshold
        return torch.where(similar, 1 - cos, (cos - self.margin).clamp(min=0)).mean()
