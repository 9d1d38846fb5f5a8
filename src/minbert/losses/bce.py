import torch.nn.functional as F

from minbert.losses.base import Loss


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy on one logit per pair (paraphrase: 1 = duplicate)."""

    needs = "logit"

    def forward(self, out, labels):
        return F.binary_cross_entropy_with_logits(out.score.float(), labels.float())
