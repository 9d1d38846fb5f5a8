"""A copy of a model's encoder with its weights in bf16, for inference on a CPU, that follows the model's weights.

Under CPU autocast a bf16 pass keeps the fp32 weights: each linear layer casts its weight and its input to bf16 at
every call, and the embeddings, LayerNorm and the residual adds run on fp32 activations, so every layer moves its
activations back and forth between the two widths. With the encoder's weights held in bf16, the residual stream is
bf16 from the embeddings on (LayerNorm still normalizes in fp32 inside its kernel), nothing is cast per call, and the
memory traffic of the elementwise work halves. It rounds the residual stream to bf16, so its outputs sit a little
further from fp32's than autocast's do, well within what bf16 inference is held to (tests/test_api.py); the speed and
the per-example differences are measured by benchmarks/bench_encoder.py and benchmarks/inference_agreement.py.
The modules left out (the heads) are shared, not copied, and still run under autocast.

The copy is made on first use and keeps those weights until `refresh()` copies the source's current ones into it:
the Runner refreshes it at every `evaluate` (training's dev evaluations, and its test predictions after reloading
the best epoch), so a training run's metrics are those of the weights of that moment, and a loaded run pays for one
copy. (A version-counter check cannot stand in for the refresh: PyTorch's fused AdamW kernel writes the weights
without bumping their counters.)
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


def _tensors(modules: list[nn.Module]) -> list[torch.Tensor]:
    return [t for m in modules for t in itertools.chain(m.parameters(), m.buffers())]


class InferenceCopy:
    """The shape of the copies the Runner runs inference from (this CastCopy, onednn.py's OneDNNCopy): made on
    the first `get()`, the listed children (the ones that are not None) new objects in it and every other child and
    attribute the model's own; `refresh()` brings in the model's current weights where the copy holds its own."""

    def __init__(self, model: nn.Module, children: tuple[str, ...]):
        self.model = model
        self.children = [n for n in children if getattr(model, n, None) is not None]
        self.copy: nn.Module | None = None

    def get(self) -> nn.Module:
        if self.copy is None:
            self.copy = self._build()
        return self.copy

    def refresh(self) -> None:
        """Nothing to copy: a copy that shares the model's tensors."""

    def _build(self) -> nn.Module:
        raise NotImplementedError

    def _deepcopy(self, share_tensors: bool) -> nn.Module:
        # every child not listed, and every attribute that is not a module child (an encoder cache, the task specs),
        # is shared through deepcopy's memo - with `share_tensors` the listed children's tensors too
        listed = {id(getattr(self.model, n)) for n in self.children}
        memo = {id(v): v for k, v in vars(self.model).items() if k != "_modules" and not k.startswith("_")}
        # every module under them too: a listed child may refer to one (a LoRA layer holds its task's adapters)
        memo.update({id(m): m for c in self.model.children() if id(c) not in listed for m in c.modules()})
        if share_tensors:
            memo.update({id(t): t for t in _tensors([getattr(self.model, n) for n in self.children])})
        return copy.deepcopy(self.model, memo)


class CastCopy(InferenceCopy):
    """`CastCopy(model, ("bert", "pals", "lora"), torch.bfloat16).get()`: the model with those children (the ones
    that are not None) in `dtype` and in eval mode, every other child the same object as the model's."""

    def __init__(self, model: nn.Module, children: tuple[str, ...], dtype: torch.dtype):
        super().__init__(model, children)
        self.dtype = dtype

    @torch.no_grad()
    def refresh(self) -> None:
        """The source's current weights into the copy (nothing to do before the first `get`, which copies them)."""
        if self.copy is not None:
            mine = _tensors([getattr(self.copy, n) for n in self.children])
            for a, b in zip(mine, _tensors([getattr(self.model, n) for n in self.children]), strict=True):
                a.copy_(b)

    @torch.inference_mode(False)  # normal tensors, which a later refresh may write to (get() runs in passes)
    def _build(self) -> nn.Module:
        out = self._deepcopy(share_tensors=False)
        for n in self.children:
            getattr(out, n).to(self.dtype).eval().requires_grad_(False)
        return out
