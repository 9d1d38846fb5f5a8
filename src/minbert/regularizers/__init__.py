"""Regularizers: an extra loss term per task batch, `reg(model, task, batch, out, needs) -> tensor` (already
weighted), and `after_step(model)` after each optimizer step. `needs` is the task loss's output kind, which picks
the divergence: symmetric KL for class logits and binary logits, squared error for real-valued scores.
Like every stateful technique (combiners, updaters), `state_dict()` / `load_state_dict()` carry their state through
checkpoints; a regularizer's values are tensors (kept in the checkpoint's safetensors file). Each is a `Regularizer`
(regularizers/base.py), built with `registry.build(REGULARIZERS, name, args)`."""

from __future__ import annotations

from minbert.regularizers.base import Regularizer
from minbert.regularizers.bregman import Bregman
from minbert.regularizers.smart import Smart

REGULARIZERS: dict[str, type[Regularizer]] = {"smart": Smart, "bregman": Bregman}
