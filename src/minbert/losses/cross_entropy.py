from typing import Annotated

import torch.nn.functional as F

from minbert.config import within
from minbert.losses.base import Loss


class CrossEntropy(Loss):
    """Softmax cross-entropy over class logits (sentiment; paraphrase with a 2-class head)."""

    needs = "logits"

    def __init__(self, label_smoothing: Annotated[float, within(0, 1)] = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, out, labels):
        return F.cross_entropy(out.logits.float(), labels.long(), label_smoothing=self.label_smoothing)
