"""Bregman proximal point optimization with momentum (Jiang et al. 2020; report 001).

Keep an EMA copy of the parameters, theta_tilde <- (1 - beta) theta + beta theta_tilde after every optimizer step,
and add mu * D(f(x; theta), f(x; theta_tilde)) to the loss (SMART's divergence; the EMA model runs without
gradients), so each update stays near the recent iterates. The EMA model runs in the trained model's mode (with
dropout while training, as the SMART term's passes do), so with dropout off the term is exactly 0 while
theta = theta_tilde.
"""

from __future__ import annotations

import copy
from typing import Annotated

import torch

from minbert import torch_private as private
from minbert.config import ge, within
from minbert.regularizers.base import Regularizer
from minbert.regularizers.divergence import divergence


class Bregman(Regularizer):
    def __init__(self, mu: Annotated[float, ge(0)] = 1.0, beta: Annotated[float, within(0, 1, "[)")] = 0.99):
        self.mu, self.beta = mu, beta
        self.ema = None  # copy of the model, made at the first call (theta_tilde_0 = theta_0)
        self.saved: dict = {}  # a checkpoint's EMA weights, loaded into the copy when it is made

    def _ensure(self, model):
        if self.ema is None:
            self.ema = copy.deepcopy(model).requires_grad_(False)
            if self.saved:
                self.ema.load_state_dict(self.saved)
                self.saved = {}
        return self.ema

    def __call__(self, model, task, batch, out, needs):
        if not self.mu:
            return out.zeros()
        ema = self._ensure(model).train(model.training)
        with torch.no_grad():
            target = ema.task_output(task, batch)
        return self.mu * divergence(out, target, needs)

    @torch.no_grad()
    def after_step(self, model) -> None:
        ema = self._ensure(model)
        params = [p for p in model.parameters()]
        private.foreach_lerp_([p for p in ema.parameters()], params, 1 - self.beta)  # beta * ema + (1 - beta) * theta

    def state_dict(self) -> dict:
        return {} if self.ema is None else {f"ema/{k}": v for k, v in self.ema.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        self.saved = {k.removeprefix("ema/"): v for k, v in state.items() if k.startswith("ema/")}
        self.ema = None
