from typing import Annotated

import torch.nn.functional as F

from minbert.config import gt
from minbert.losses.base import Loss


class CosineMSE(Loss):
    """Cosine-similarity MSE (report 000; sentence-transformers' CosineSimilarityLoss): the mean of
    (cos(u, v) - label / label_max)^2, so a similarity label of 0..5 is compared on the cosine's own 0..1 scale."""

    needs = "embeddings"

    def __init__(self, label_max: Annotated[float, gt(0)] = 5.0):
        super().__init__()
        self.label_max = label_max

    def forward(self, out, labels):
        cos = F.cosine_similarity(out.u.float(), out.v.float(), dim=-1, eps=1e-8)
        return F.mse_loss(cos, labels.float() / self.label_max)
