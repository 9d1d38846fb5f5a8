"""The output divergences SMART and Bregman proximal point use (Jiang et al. 2020): symmetric KL for
classification, squared error for regression."""

import torch
import torch.nn.functional as F


def divergence(a: dict, b: dict, needs: str) -> torch.Tensor:
    """Mean divergence between two head outputs of the same batch; gradients flow into both unless detached."""
    if "logits" in a:
        p, q = F.log_softmax(a["logits"].float(), -1), F.log_softmax(b["logits"].float(), -1)
        return (F.kl_div(q, p, log_target=True, reduction="batchmean") + F.kl_div(p, q, log_target=True, reduction="batchmean"))
    if needs == "logit":  # Bernoulli KL both ways, which for logits a, b is (sigmoid(a) - sigmoid(b)) (a - b)
        x, y = a["score"].float(), b["score"].float()
        return ((torch.sigmoid(x) - torch.sigmoid(y)) * (x - y)).mean()
    return F.mse_loss(a["score"].float(), b["score"].float())


def detached(out: dict) -> dict:
    return {k: v.detach() for k, v in out.items()}
