"""Every private PyTorch API minbert uses, in this one module, each behind a feature check with a public fallback.

PyTorch's underscore names (`torch._foreach_*`, `torch._fused_adamw_`, `torch.ops.mkldnn._*`, `torch._C._*`,
`torch._dynamo`) change without notice. Each function here uses one where this PyTorch has it and otherwise does the
same with public calls: a loop over tensors, `F.linear`, a fresh allocation - slower, never different in kind.
`enabled(False)`, or MINBERT_PRIVATE_APIS=off in the environment, turns every check off at once
(tests/test_fast_paths.py runs the parity tests that way); the machine's CPU flags are read here too, so nothing else
opens /proc/cpuinfo.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

_ENABLED = os.environ.get("MINBERT_PRIVATE_APIS", "on") != "off"


@contextlib.contextmanager
def enabled(on: bool):
    """Within this context, every private API counts as present (`on`) or missing (the public fallbacks run)."""
    global _ENABLED
    saved, _ENABLED = _ENABLED, on
    try:
        yield
    finally:
        _ENABLED = saved


def _get(owner, name: str):
    """`owner.name` where this PyTorch has it and private APIs are enabled, else None."""
    return getattr(owner, name, None) if _ENABLED else None


# --- one call over a list of tensors (torch._foreach_*): a Python loop otherwise --------------------------------------


def foreach_norm(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    f = _get(torch, "_foreach_norm")
    return list(f(ts)) if f else [torch.linalg.vector_norm(t) for t in ts]


def foreach_mul_(ts: list[torch.Tensor], scalar) -> None:
    f = _get(torch, "_foreach_mul_")
    if f:
        return f(ts, scalar)
    for t in ts:
        t.mul_(scalar)


def foreach_lerp_(ts: list[torch.Tensor], ends: list[torch.Tensor], weight: float) -> None:
    f = _get(torch, "_foreach_lerp_")
    if f:
        return f(ts, ends, weight)
    for t, e in zip(ts, ends):
        t.lerp_(e, weight)


def foreach_addcmul_(ts: list[torch.Tensor], a: list[torch.Tensor], b: list[torch.Tensor], value: float) -> None:
    f = _get(torch, "_foreach_addcmul_")
    if f:
        return f(ts, a, b, value=value)
    for t, x, y in zip(ts, a, b):
        t.addcmul_(x, y, value=value)


def foreach_sqrt_add(ts: list[torch.Tensor], eps: float) -> list[torch.Tensor]:
    """[sqrt(t) + eps for t in ts], as new tensors."""
    sqrt, add = _get(torch, "_foreach_sqrt"), _get(torch, "_foreach_add_")
    if sqrt and add:
        out = sqrt(ts)
        add(out, eps)
        return out
    return [t.sqrt().add_(eps) for t in ts]


def foreach_addcdiv_(ts: list[torch.Tensor], a: list[torch.Tensor], b: list[torch.Tensor], value: float) -> None:
    f = _get(torch, "_foreach_addcdiv_")
    if f:
        return f(ts, a, b, value=value)
    for t, x, y in zip(ts, a, b):
        t.addcdiv_(x, y, value=value)


def has_fused_adamw() -> bool:
    return _get(torch, "_fused_adamw_") is not None


def fused_adamw_(
    params, grads, m, v, step, lr: float, b1: float, b2: float, wd: float, eps: float, found_inf=None
) -> None:
    """PyTorch's fused AdamW kernel (bias-corrected, decoupled weight decay) over these tensors; callers check
    `has_fused_adamw()` first and run their own foreach update where it is missing. `step`: the step count of all of
    them (an int), or each one's as a 0-dim float tensor on its device, counted on the device: one more, less
    `found_inf` (a 0-dim tensor, 1 where the kernel is to skip this update, as torch.optim.AdamW counts it)."""
    if isinstance(step, list):
        steps = step
        torch._foreach_add_(steps, 1)
    else:  # the kernel reads the step count (never writes it), on the weights' device: CUDA's refuses a CPU one
        steps = [torch.tensor(float(step), device=params[0].device)] * len(params)
    torch._fused_adamw_(
        params, grads, m, v, [], steps, amsgrad=False, lr=lr, beta1=b1, beta2=b2, weight_decay=wd, eps=eps,
        maximize=False, grad_scale=None, found_inf=found_inf,
    )  # fmt: skip
    if isinstance(step, list) and found_inf is not None:
        torch._foreach_sub_(steps, [found_inf] * len(steps))


# --- storage reference counts (torch._C) -----------------------------------------------------------------------------


def storage_holders(t: torch.Tensor) -> int:
    """References to t's storage (the tensor itself counts one, the temporary storage object another); -1 where this
    PyTorch cannot say."""
    count = _get(torch._C, "_storage_Use_Count")
    return -1 if count is None else count(t.untyped_storage()._cdata)


# --- the CPU and oneDNN's own linear op (torch.ops.mkldnn._*) -------------------------------------------------------


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


@functools.cache  # read and parsed once per process: precision and inference-copy choices ask again and again
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux; empty elsewhere)."""
    return frozenset(w for line in _cpuinfo().splitlines() if line.startswith("flags") for w in line.split())


@functools.cache
def cpu_vendor() -> str:
    """ "AuthenticAMD", "GenuineIntel", ... (Linux x86; "" elsewhere)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return ""


def _mkldnn(name: str):
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    return _get(torch.ops.mkldnn, name)


def has_onednn_linear() -> bool:
    return _mkldnn("_linear_pointwise") is not None


def has_onednn_packing() -> bool:
    """oneDNN's linear op, its weight packing, and its bf16 kernels in this PyTorch build."""
    supported = _mkldnn("_is_mkldnn_bf16_supported")
    return has_onednn_linear() and _mkldnn("_reorder_linear_weight") is not None and bool(supported and supported())


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W^T + b through oneDNN's linear op (W plain (out, in), or packed by `onednn_pack`); F.linear otherwise (a
    packed weight never reaches it: packing needs the op too)."""
    op = _mkldnn("_linear_pointwise")
    return op(x, weight, bias, "none", [], "") if op else F.linear(x, weight, bias)


def onednn_pack(w: torch.Tensor, batch_hint: int) -> torch.Tensor:
    """W (out, in) laid out once in oneDNN's blocked layout for `onednn_linear`; W itself where packing is missing."""
    op = _mkldnn("_reorder_linear_weight")
    return op(w, batch_hint) if op and has_onednn_linear() else w


# --- torch.compile's error fallback (torch._dynamo) -----------------------------------------------------------------


def compile_falls_back_to_eager() -> bool:
    """A graph that fails to compile runs eagerly instead of raising; False where this PyTorch has no such switch."""
    if not _ENABLED:
        return False
    try:
        import torch._dynamo
    except ImportError:
        return False
    torch._dynamo.config.suppress_errors = True
    return True
