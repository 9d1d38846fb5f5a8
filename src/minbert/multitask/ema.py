"""An exponential moving average of the weights during training (Polyak & Juditsky 1992's averaging in its EMA form,
as TensorFlow's `ExponentialMovingAverage` and timm's `ModelEma` keep it): after every optimizer step

    shadow <- d shadow + (1 - d) theta,   d = min(decay, (1 + t) / (10 + t))   (t: updates so far),

the warm-up of d (TensorFlow's `num_updates`) keeps the first steps from tying the average to the pretrained weights
for thousands of steps. The run evaluates, keeps as its best checkpoint and predicts with the average (`swapped`);
training goes on with its own weights. Both are in the last checkpoint, so a resumed run is bit-equal.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(d).add_(p.detach(), alpha=1 - d)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module):
        """The model with the average's weights inside the block, its own after."""
        params = dict(model.named_parameters())
        own = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, t in self.shadow.items():
                params[n].copy_(t)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, t in own.items():
                    params[n].copy_(t)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema/{n}": t for n, t in self.shadow.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        for n in self.shadow:
            self.shadow[n].copy_(tensors[f"ema/{n}"])
        self.updates = updates
