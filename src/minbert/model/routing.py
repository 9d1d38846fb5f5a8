"""Which task each row of an encoder pass belongs to, for the modules that differ by task: LoRA's adapted linear
layers (model/lora.py) and the layers with PALs (model/pals.py).

These attach to the encoder by replacing its modules, as PEFT's LoRA layers do, so the encoder's forward takes no
task argument. What differs per pass is set around it instead: `with routing.to(groups):`, `groups` a tuple of (task,
rows) - rows an index tensor over the pass's first dimension (the flat tokens of a fused multitask pass), or None for
every row (a one-task batch). One Routing is shared by every module of a model that reads it.
"""

from __future__ import annotations

import contextlib

import torch

Groups = tuple[tuple[str, torch.Tensor | None], ...]


class Routing:
    def __init__(self):
        self.groups: Groups = ()

    @contextlib.contextmanager
    def to(self, groups: Groups):
        saved, self.groups = self.groups, groups
        try:
            yield
        finally:
            self.groups = saved

    def checkpoint_context(self):
        """torch.utils.checkpoint's `context_fn`: a checkpointed layer is recomputed in the backward, after the
        pass's `to` has exited (and possibly after other passes), so its recomputation gets the groups of its own
        forward back."""
        return contextlib.nullcontext(), self.to(self.groups)
