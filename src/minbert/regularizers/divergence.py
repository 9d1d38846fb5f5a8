"""The output divergences SMART and Bregman proximal point use (Jiang et al. 2020): symmetric KL for class logits,
Bernoulli symmetric KL for a binary logit, squared error for real-valued scores."""

import torch
import torch.nn.functional as F

from minbert.model.outputs import HeadOutput


def divergence(a: HeadOutput, b: HeadOutput, needs: str) -> torch.Tensor:
    """Mean divergence between two head outputs of the same batch; gradients flow into both unless detached."""
    if a.logits is not None:
        p, q = F.log_softmax(a.logits.float(), -1), F.log_softmax(b.logits.float(), -1)
        return F.kl_div(q, p, log_target=True, reduction="batchmean") + F.kl_div(
            p, q, log_target=True, reduction="batchmean"
        )
    if needs == "logit":  # Bernoulli KL both ways, which for logits a, b is (sigmoid(a) - sigmoid(b)) (a - b)
        x, y = a.score.float(), b.score.float()
        return ((torch.sigmoid(x) - torch.sigmoid(y)) * (x - y)).mean()
    return F.mse_loss(a.score.float(), b.score.float())


def toward(a: HeadOutput, b: HeadOutput, needs: str) -> torch.Tensor:
    """One direction of the symmetric divergence, KL(b || a) with b held fixed: the gradient reaches a only.
    toward(a, b) + toward(b, a) has the value of divergence(a, b), each side pulled towards the other (MT-DNN's
    SymKlCriterion); for squared error each half is half the error, so the sum is the plain squared error."""
    if a.logits is not None:
        return F.kl_div(
            F.log_softmax(a.logits.float(), -1),
            F.log_softmax(b.logits.detach().float(), -1),
            log_target=True,
            reduction="batchmean",
        )
    x, y = a.score.float(), b.score.detach().float()
    if needs == "logit":  # KL(q || p) for q = sigmoid(y), p = sigmoid(x): cross-entropy minus q's entropy
        q = torch.sigmoid(y)
        entropy = F.binary_cross_entropy(q, q, reduction="none")
        return (F.binary_cross_entropy_with_logits(x, q, reduction="none") - entropy).mean()
    return 0.5 * F.mse_loss(x, y)
