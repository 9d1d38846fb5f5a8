"""fp32 inference on AMD CPUs with the linear layers through oneDNN instead of PyTorch's default fp32 GEMM.

PyTorch's CPU wheels run an fp32 `F.linear` through MKL, which on AMD processors takes a code path at about half of
what the same cores reach with oneDNN (also inside PyTorch, and already what its bf16 matmuls use): at the
encoder's shapes on the project's AMD EPYC, 202 against 448 GFLOP/s, and fp32 inference 1.73x faster with it
(benchmarks/RESULTS.md, "bench_encoder: 2026-12-03 06:28"). The
same op (`torch.ops.mkldnn._linear_pointwise`, what inductor's CPU backend calls for a linear layer) computes the
same product in fp32, summed in another order: outputs differ from F.linear's by float rounding (about 1e-6
relative), not by precision.

Only where it is measured faster (`faster_here`: AMD x86 CPUs with AVX-512), only for inference, and only on a copy: the
Runner builds `OneDNNCopy(model, ("bert", "pals"))` once for fp32 CPU inference there. The copy shares every
weight with the model (nothing to refresh, no memory), its linear layers replaced by `OneDNNLinear` over the same
parameters. Training keeps F.linear: a different summation order in the forward and backward would change fp32
training results beyond their last digits, which a speed path must not do.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minbert.model.cast import InferenceCopy


@functools.cache
def faster_here() -> bool:
    """An AMD x86 CPU with AVX-512 (where it was measured; the AVX2-only EPYC and Intel CPUs keep MKL, unmeasured),
    with PyTorch's oneDNN linear op available."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._linear_pointwise  # noqa: B018 - present in every x86 CPU build this project uses
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except (AttributeError, RuntimeError, OSError):
        return False
    return "AuthenticAMD" in info and " avx512f" in info


class OneDNNLinear(nn.Module):
    """A linear layer over another one's weight and bias (the same Parameters), through oneDNN in fp32 without
    autograd, F.linear otherwise."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32 and not torch.is_grad_enabled():
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


class OneDNNCopy(InferenceCopy):
    """`OneDNNCopy(model, ("bert", "pals")).get()`: the model with those children's linear layers as OneDNNLinear,
    sharing every tensor with the model (so `refresh` has nothing to copy)."""

    def _build(self) -> nn.Module:
        out = self._deepcopy(share_tensors=True)
        parents = [p for n in self.children for p in getattr(out, n).modules()]
        for parent, name, child in [(p, name, c) for p in parents for name, c in p.named_children()]:
            if type(child) is nn.Linear:
                setattr(parent, name, OneDNNLinear(child))
        return out
