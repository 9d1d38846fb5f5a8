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

The paper's Algorithm 1 also projects delta onto an eps-ball; the reference code does not, and neither do we (with
its eps = 1e-6 the perturbation would vanish). All passes run in the model's mode, as in the reference: with
dropout on, the term also penalizes the difference between dropout masks. Report 001 turned dropout off in its
adversarial passes but kept it in the clean one, which makes the term mostly a dropout-consistency penalty.
"""

from __future__ import annotations

import torch

from minbert.regularizers.divergence import detached, toward


def adversarial_delta(
    f, x: torch.Tensor, clean: dict, needs: str, steps: int, sigma: float, eta: float, eps: float
) -> torch.Tensor:
    """The perturbation of the embedding output x (B', T, H) after `steps` ascent steps; `f(x') -> head output`."""
    delta = torch.randn_like(x) * sigma
    for k in range(steps):
        delta.requires_grad_(True)
        (g,) = torch.autograd.grad(
            toward(f(x + delta), clean, needs), delta
        )  # KL(f(x) || f(x + delta)), as the reference
        top = g.abs().amax(-1, keepdim=True)  # (B', T, 1) per-token inf-norm; padding tokens get no gradient
        step = eta * g / (top + eps * top.max() + torch.finfo(g.dtype).tiny)
        delta = (step if k == 0 else delta + step).detach()
    return delta


class Smart:
    def __init__(self, weight: float = 1.0, steps: int = 1, sigma: float = 1e-5, eps: float = 1e-6, eta: float = 1e-3):
        self.weight, self.steps, self.sigma, self.eps, self.eta = weight, steps, sigma, eps, eta

    def __call__(self, model, task, batch, out, needs):
        if not self.weight:
            return out[next(iter(out))].new_zeros(())
        x = model.embedded(task, batch).detach()  # (B', T, H), as the reference detaches its perturbed input
        clean = detached(out)
        f = lambda e: model(task, batch, embedded=e)  # noqa: E731
        delta = adversarial_delta(f, x, clean, needs, self.steps, self.sigma, self.eta, self.eps)
        adv = f(x + delta)
        return self.weight * (toward(out, adv, needs) + toward(adv, out, needs))

    def after_step(self, model) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
