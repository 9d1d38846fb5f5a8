"""CPU inference with the linear layers through oneDNN's own linear op: fp32 on AMD CPUs instead of PyTorch's default
fp32 GEMM, and bf16 from weights packed once into oneDNN's blocked layout.

PyTorch's CPU wheels run an fp32 `F.linear` through MKL, which on AMD processors takes a code path well below what
the same cores reach with oneDNN (also inside PyTorch, and already what its bf16 matmuls use; benchmarks/
bench_encoder.py times both). The same op (what inductor's CPU backend calls for a linear layer) computes the same
product in fp32, summed in another order: outputs differ from F.linear's by float rounding (about 1e-6 relative),
not by precision.

Only where it is measured faster (`faster_here`: AMD x86 CPUs with AVX-512), only for inference, and only on a copy:
the Runner builds `OneDNNCopy(model, ("bert", "pals"))` once for fp32 CPU inference there. The copy shares every
weight with the model (nothing to refresh, no memory), its linear layers replaced by `OneDNNLinear` over the same
parameters. Training keeps F.linear: a different summation order in the forward and backward would change fp32
training results beyond their last digits, which a speed path must not do.

bf16 `F.linear` already runs in oneDNN, but from a plain (out, in) weight that oneDNN lays out afresh for its
kernel at every call. Inference weights change only when the Runner refreshes its bf16 copy, so `PackedCopy` (the
Runner's bf16 copy where `packs_bf16()`) lays each weight out once, at the copy's build and at each refresh, and
packs each attention's q, k and v as one (3H, H) weight, which the plain copy concatenates at every call. The product
is the same kernel's on the same bf16 numbers, so the outputs are the plain copy's bit for bit (tests/test_onednn.py).
The oneDNN ops are private PyTorch APIs, reached through minbert/torch_private.py.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from minbert import torch_private as private
from minbert.model.fast.cast import CastCopy, InferenceCopy
from minbert.model.fast.cpu import SelfAttention, packed_applies


def faster_here() -> bool:
    """An AMD x86 CPU with AVX-512 (where it was measured; the AVX2-only EPYC and Intel CPUs keep MKL, unmeasured),
    with PyTorch's oneDNN linear op available."""
    return private.cpu_vendor() == "AuthenticAMD" and "avx512f" in private.cpu_flags() and private.has_onednn_linear()


class OneDNNLinear(nn.Module):
    """A linear layer over another one's weight and bias (the same Parameters), through oneDNN in fp32 without
    autograd, F.linear otherwise."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32 and not torch.is_grad_enabled():
            return private.onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class OneDNNCopy(InferenceCopy):
    """`OneDNNCopy(model, ("bert", "pals")).get()`: the model with those children's linear layers as OneDNNLinear,
    sharing every tensor with the model (so `refresh` has nothing to copy)."""

    def _build(self) -> nn.Module:
        out = self._deepcopy(share_tensors=True)
        _swap_linears([getattr(out, n) for n in self.children], OneDNNLinear)
        return out


def _swap_linears(roots: list[nn.Module], make) -> list[nn.Module]:
    """Every plain nn.Linear under `roots` replaced by `make(linear)`, in place; the modules under them (as they were
    before the swap)."""
    modules = [m for root in roots for m in root.modules()]
    for parent, name, child in [(p, name, c) for p in modules for name, c in p.named_children()]:
        if type(child) is nn.Linear:
            setattr(parent, name, make(child))
    return modules


def packs_bf16() -> bool:
    """bf16 CPU inference from packed weights (PackedCopy): on x86 CPUs with native bf16 (AVX-512 BF16 or AMX, where
    oneDNN's bf16 kernels run; measured on the project's AMD EPYC), with the oneDNN ops in this PyTorch build."""
    return bool({"avx512_bf16", "amx_bf16"} & private.cpu_flags()) and private.has_onednn_packing()


class Packed:
    """x @ W^T + b for one or more bf16 linear layers side by side (an attention's q, k and v as one product), W in
    oneDNN's blocked layout. `pack()` rebuilds it from the layers' current weights. A plain attribute, not a module:
    it adds no parameters, so a copy's tensors still pair one to one with its source's."""

    def __init__(self, *linears: nn.Linear):
        self.linears = linears
        self.pack()

    @torch.no_grad()
    def pack(self) -> None:
        w = torch.cat([lin.weight for lin in self.linears])  # (out, in): the layers' outputs side by side
        biases = [lin.bias for lin in self.linears]
        self.bias = None if any(b is None for b in biases) else torch.cat(biases)  # (out,)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        # the batch size is only a hint for the layout; measured insensitive from 300 to 2,400 rows
        self.weight = private.onednn_pack(w, 1024)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:  # a deep copy's, packed at its first use
            self.pack()
        flat = x.reshape(-1, self.in_features)  # (N, in): oneDNN's op takes a matrix
        y = private.onednn_linear(flat, self.weight, self.bias)  # (N, out)
        return y.view(*x.shape[:-1], self.out_features)  # (..., out)

    def __deepcopy__(self, memo: dict) -> "Packed":
        # the blocked tensor has no storage to copy: the copy packs its own copies of the layers at its first use
        # (not here: a PackedLinear's copy is still empty while its deepcopy reaches this)
        out = Packed.__new__(Packed)
        out.linears, out.weight = copy.deepcopy(self.linears, memo), None
        return out


class PackedLinear(nn.Linear):
    """An nn.Linear over the same Parameters as the one it replaces (so the copy's tensors pair with its source's)
    that runs bf16 inference from a Packed copy of its weight, and F.linear for anything else."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = Packed(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.packed(x) if packed_applies(x) else F.linear(x, self.weight, self.bias)


class PackedCopy(CastCopy):
    """`PackedCopy(model, ("bert", "pals", "lora"), torch.bfloat16).get()`: CastCopy's bf16 copy with its linear
    layers as PackedLinear and each encoder self-attention's q, k and v packed as one (`packed_qkv`, which
    cpu.SelfAttention uses), packed again at every `refresh`."""

    @torch.inference_mode(False)  # as CastCopy's: normal tensors, repacked by later refreshes
    def _build(self) -> nn.Module:
        out = super()._build()
        modules = _swap_linears([getattr(out, n) for n in self.children], PackedLinear)
        attention = [m for m in modules if isinstance(m, SelfAttention)]
        for m in attention:
            m.packed_qkv = Packed(m.query, m.key, m.value)
        linears = [m for m in out.modules() if isinstance(m, PackedLinear)]
        self.packs = [m.packed for m in linears] + [m.packed_qkv for m in attention]  # what a refresh repacks
        return out

    @torch.inference_mode(False)
    def refresh(self) -> None:
        super().refresh()
        for packed in self.packs if self.copy is not None else ():
            packed.pack()
