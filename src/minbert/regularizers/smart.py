"""SMART smoothness-inducing adversarial regularization (Jiang et al. 2020; report 001), as MT-DNN's reference code
(`mt_dnn/perturbation.py`, `SmartPerturbation`) computes it:

1. x = the embedding layer's output (B', T, H), held fixed; delta ~ N(0, sigma^2) on real tokens.
2. `steps` ascent steps on KL(f(x) || f(x + delta)) (squared error for scores): g = the gradient in delta,
   normalized per token by its inf-norm, delta <- delta + eta g / (|g|_inf + eps); the first step replaces the
   initial noise, as in the reference, so after one step every token moves by eta in its worst direction.
   `eps` only guards the division. The reference adds it as an absolute 1e-6, but at sigma = 1e-5 the divergence's
   gradient is about 1e-11 per element on the default checkpoint (SST, STS; dropout off), so an absolute 1e-6 shrinks
   the step a hundred-thousandfold and the term to ~1e-13. Here eps is relative to the batch's largest |g|: the
   normalization the reference intends, whatever the loss scale.
3. The term is weight * (KL(f(x + delta) || f(x)) + KL(f(x) || f(x + delta))), each direction pulling one side with
   the other held fixed (MT-DNN's SymKlCriterion); Bernoulli KL for a binary logit, squared error for scores.

`reference` picks which of MT-DNN's two versions of step 2 runs. "99d1b20" (the default; MT-DNN at that commit) is
the above, with x held fixed. "cceaa00" (MT-DNN from that commit on, its current `perturbation.py`) keeps the noise and
normalizes the sum per token, delta <- (delta + eta g) / (|delta + eta g|_inf + eps), with its ascent objective
`stable_kl(..., reduce=False)` (a sum over the batch; squared error summed for scores) and an absolute eps, and
leaves x attached, so the final term's gradient also reaches the embedding layer through x. Its perturbation has a
per-token inf-norm of about 1 rather than eta - on a LayerNorm'd embedding output that is no longer the small
neighbourhood the paper's smoothness term is about, and the term is about 2e4 times larger on a tiny BERT - which
is why the default stays with the version whose step is eta, as the paper's Algorithm 1 writes it.

The paper's Algorithm 1 also projects delta onto an eps-ball; the reference code does not, and neither do we (with
its eps = 1e-6 the perturbation would vanish). All passes run in the model's mode, as in the reference: with
dropout on, the term also penalizes the difference between dropout masks. Report 001 turned dropout off in its
adversarial passes but kept it in the clean one, which makes the term mostly a dropout-consistency penalty.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from minbert.config import ge, gt, within
from minbert.model.outputs import HeadOutput
from minbert.regularizers.base import Regularizer
from minbert.regularizers.divergence import toward


def adversarial_delta(
    f, x: torch.Tensor, clean: HeadOutput, needs: str, steps: int, sigma: float, eta: float, eps: float, ref="99d1b20"
) -> torch.Tensor:
    """The perturbation of the embedding output x (B', T, H) after `steps` ascent steps; `f(x') -> head output`;
    `ref`: MT-DNN's version of the step (module docstring)."""
    delta = torch.randn_like(x) * sigma
    x = x.detach()  # the ascent moves delta only
    for k in range(steps):
        delta.requires_grad_(True)
        if ref == "99d1b20":
            (g,) = torch.autograd.grad(toward(f(x + delta), clean, needs), delta)  # KL(f(x) || f(x + delta))
            top = g.abs().amax(-1, keepdim=True)  # (B', T, 1) per-token inf-norm; padding tokens get no gradient
            step = eta * g / (top + eps * top.max() + torch.finfo(g.dtype).tiny)
            delta = (step if k == 0 else delta + step).detach()
        else:
            (g,) = torch.autograd.grad(stable_kl_sum(f(x + delta), clean, needs), delta)
            moved = delta.detach() + eta * g
            delta = (moved / (moved.abs().amax(-1, keepdim=True) + eps)).detach()  # (B', T, H) / (B', T, 1)
    return delta


def stable_kl_sum(adv: HeadOutput, clean: HeadOutput, needs: str) -> torch.Tensor:
    """MT-DNN's ascent objective at cceaa00: `loss.stable_kl(adv, clean, reduce=False)` for class logits (a binary
    logit z as the two logits [0, z]), the summed squared error for scores."""
    if adv.logits is None and needs != "logit":
        return F.mse_loss(adv.score.float(), clean.score.detach().float(), reduction="sum")
    if adv.logits is not None:
        a, t = adv.logits.float(), clean.logits.detach().float()
    else:
        a = torch.stack([torch.zeros_like(adv.score), adv.score], -1).float()  # (B, 2)
        t = torch.stack([torch.zeros_like(clean.score), clean.score], -1).detach().float()  # (B, 2)
    p, y = F.softmax(a, -1), F.softmax(t, -1)
    rp = -(1.0 / (p + 1e-6) - 1 + 1e-6).detach().log()
    ry = -(1.0 / (y + 1e-6) - 1 + 1e-6).detach().log()
    return (p * (rp - ry) * 2).sum()


class Smart(Regularizer):
    def __init__(
        self,
        weight: Annotated[float, ge(0)] = 1.0,
        steps: Annotated[int, within(1, 100)] = 1,
        sigma: Annotated[float, ge(0)] = 1e-5,
        eps: Annotated[float, gt(0)] = 1e-6,
        eta: Annotated[float, gt(0)] = 1e-3,
        reference: Literal["99d1b20", "cceaa00"] = "99d1b20",
    ):
        self.weight, self.steps, self.sigma, self.eps, self.eta = weight, steps, sigma, eps, eta
        self.reference = reference

    def __call__(self, model, task, batch, out, needs):
        if not self.weight:
            return out.zeros()
        x = model.embedded(task, batch)  # (B', T, H)
        if self.reference == "99d1b20":
            x = x.detach()  # as that version detaches its perturbed input; cceaa00 keeps it attached
        clean = out.detach()
        f = lambda e: model.task_output(task, batch, embedded=e)  # noqa: E731
        delta = adversarial_delta(f, x, clean, needs, self.steps, self.sigma, self.eta, self.eps, self.reference)
        adv = f(x + delta)
        return self.weight * (toward(out, adv, needs) + toward(adv, out, needs))
