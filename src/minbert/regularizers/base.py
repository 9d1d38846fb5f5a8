"""What every regularizer is: `reg(model, task, batch, out, needs) -> term` (already weighted) for each task batch,
an update after each optimizer step, and its tensors for checkpoints; the hooks default to doing nothing."""

from __future__ import annotations

import torch

from minbert.model.outputs import HeadOutput


class Regularizer:
    def __call__(self, model, task: str, batch, out: HeadOutput, needs: str) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
