"""What every regularizer is: `reg(model, task, batch, out, needs) -> term` (already weighted) for each task batch,
and `after_step(model)` after each optimizer step (by default nothing); its tensors for checkpoints come from
`state_dict()` / `load_state_dict()` (`registry.Extension`: none by default)."""

from __future__ import annotations

import torch

from minbert.model.outputs import HeadOutput
from minbert.registry import Extension


class Regularizer(Extension):
    def __call__(self, model, task: str, batch, out: HeadOutput, needs: str) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model) -> None:
        pass
