import torch.nn.functional as F

from minbert.losses.base import Loss


class MSE(Loss):
    """Mean squared error of the head's score against the label, on the label's own scale (STS: 0..5)."""

    needs = "score"

    def forward(self, out, labels):
        return F.mse_loss(out.score.float(), labels.float())
