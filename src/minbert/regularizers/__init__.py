"""Regularizers: an extra loss term per task batch, `reg(model, task, batch, out, needs) -> tensor` (already
weighted), and `after_step(model)` after each optimizer step. `needs` is the task loss's output kind, which picks
the divergence: symmetric KL for class logits and binary logits, squared error for real-valued scores.
Like every stateful technique (combiners, learning-rate schedules), `state_dict()` / `load_state_dict()` carry their
state through checkpoints; a regularizer's values are tensors (kept in the checkpoint's safetensors file)."""

from minbert.regularizers.bregman import Bregman
from minbert.regularizers.smart import Smart

REGULARIZERS = {"smart": Smart, "bregman": Bregman}
