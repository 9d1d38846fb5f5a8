"""SMART smoothness-inducing adversarial regularization (Jiang et al. 2020, Algorithm 1; report 001).

Perturb the word embeddings with Gaussian noise (sigma), take `steps` projected gradient-ascent steps on the
divergence between clean and perturbed outputs (step eta along the gradient normalized by its inf-norm, then
projection onto the inf-norm ball of radius eps), and add weight * D_sym(f(x + noise), f(x)). Dropout is off in
the adversarial passes (report 001's note, after Hayes 2023). Defaults are the report's: steps=1, eps=1e-6,
eta=1e-3; sigma=1e-5 as in the paper.
"""

from __future__ import annotations

import torch

from minbert.regularizers.divergence import detached, divergence


def adversarial_noise(f, emb, clean: dict, needs: str, steps: int, sigma: float, eps: float, eta: float) -> torch.Tensor:
    """The perturbation after `steps` ascent steps; `f(inputs_embeds) -> head output`."""
    noise = (torch.randn_like(emb) * sigma).clamp(-eps, eps)
    for _ in range(steps):
        noise.requires_grad_(True)
        div = divergence(f(emb + noise), clean, needs)
        (g,) = torch.autograd.grad(div, noise)
        scale = g.abs().amax(dim=tuple(range(1, g.dim())), keepdim=True).clamp(min=1e-12)  # per-example inf-norm
        noise = (noise + eta * g / scale).clamp(-eps, eps).detach()
    return noise


class Smart:
    def __init__(self, weight: float = 1.0, steps: float = 1, sigma: float = 1e-5, eps: float = 1e-6, eta: float = 1e-3):
        self.weight, self.steps, self.sigma, self.eps, self.eta = weight, int(steps), sigma, eps, eta

    def __call__(self, model, task, batch, out, needs):
        if not self.weight:
            return out[next(iter(out))].new_zeros(())
        emb = model.bert.embeddings.word_embeddings(batch.ids).detach()  # (B', T, H)
        clean = detached(out)
        was_training = model.training
        model.eval()  # no dropout in the adversarial passes
        try:
            f = lambda e: model(task, batch, inputs_embeds=e)  # noqa: E731
            noise = adversarial_noise(f, emb, clean, needs, self.steps, self.sigma, self.eps, self.eta)
            adv = f(emb + noise)
        finally:
            model.train(was_training)
        # symmetric, as in the reference implementation: each side pulled towards the other, the other held fixed
        return self.weight * (divergence(adv, clean, needs) + divergence(out, detached(adv), needs)) / 2

    def after_step(self, model) -> None:
        pass

    def state_tensors(self) -> dict:
        return {}

    def load_state_tensors(self, tensors: dict, model=None) -> None:
        pass
