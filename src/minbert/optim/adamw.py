"""AdamW (Loshchilov & Hutter 2019) as the CS224N handout asks for it.

For each parameter with gradient g at step t:

    m = b1 m + (1 - b1) g                       first moment
    v = b2 v + (1 - b2) g^2                     second moment
    a = lr sqrt(1 - b2^t) / (1 - b1^t)          "efficient" bias correction, Kingma & Ba section 2
    e = eps sqrt(1 - b2^t)                      the matching epsilon-hat of that section
    p = p - lr wd p                             decoupled weight decay, on the pre-update weights
    p = p - a m / (sqrt(v) + e)

With e = eps * sqrt(1 - b2^t) the efficient form is algebraically the textbook step
lr * m_hat / (sqrt(v_hat) + eps), so `eps` means what it means in torch.optim.AdamW; the handout's variant that
adds eps itself to sqrt(v) differs by up to 1e-5 after a thousand steps. Without bias correction a = lr, e = eps.
The updates are written with PyTorch's foreach operations so that one call touches every tensor of a group: on a CPU a
per-tensor Python loop costs more than the arithmetic for BERT's ~200 tensors.

`fused=True` (the default when bias correction is on) runs the same step through PyTorch's fused AdamW kernel: one
pass over memory instead of the six foreach passes above, which matters because the word-embedding table gets a
dense gradient every step (benchmarks/bench_kernels.py times both). Both are private PyTorch APIs, reached through
minbert/torch_private.py with a public fallback each. tests/test_adamw.py checks both paths against
torch.optim.AdamW and against each other.

`step(found_inf=...)` is the step a GPU takes without waiting for its host (multitask/stepper.py): the fused kernel
only, each tensor's step count a 0-dim tensor on its device, and the whole update - weights, moments and count -
skipped on the device where `found_inf` is 1 (a non-finite gradient), as torch.optim.AdamW does it for the gradient
scaler. The count goes back to an int in the next ordinary step.

A row-sparse gradient (an `nn.Embedding(sparse=True)` table: `lazy_word_embeddings`) gets the lazy update of
torch.optim.SparseAdam and TensorFlow's LazyAdam: only the rows the gradient names are read and written - their
moments, their weight decay and their step - through the same kernel on those rows gathered into small tensors; the
other rows, and their moments, stay as they are. A row in every step's gradient is updated exactly as the dense
update would; the step count (the bias correction) is the table's, one per step as for every other tensor.
"""

from __future__ import annotations

import math

import torch

from minbert import torch_private as private


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True, fused=None):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}; must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}; each must be in [0, 1)")
        if eps < 0.0:
            raise ValueError(f"invalid eps {eps}; must be >= 0")
        if fused and not correct_bias:
            raise ValueError("fused=True needs correct_bias=True: the fused kernel always corrects the bias")
        fused = correct_bias and private.has_fused_adamw() if fused is None else fused
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, correct_bias=correct_bias, fused=fused
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None, found_inf: torch.Tensor | None = None):
        """One update of every parameter with a gradient. `found_inf`: a 0-dim float tensor on the weights' device,
        1 where this update is to be skipped on the device (the module docstring); it needs the fused kernel."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if found_inf is not None:
            self._step_on_device(found_inf)
            return loss
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                self._init(p)
                if torch.is_tensor(self.state[p]["step"]):  # counted on the device until now
                    self.state[p]["step"] = int(self.state[p]["step"])
            # Every tensor of a group has taken the same number of steps unless a gradient was missing
            # earlier; bucket by step so bias correction stays exact per tensor.
            by_step: dict[int, list[torch.Tensor]] = {}
            for p in params:
                self.state[p]["step"] += 1
                by_step.setdefault(self.state[p]["step"], []).append(p)
            for t, ps in by_step.items():
                dense = [p for p in ps if not p.grad.is_sparse]
                if dense:
                    state = [self.state[p] for p in dense]
                    m, v = [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state]
                    self._update(dense, [p.grad for p in dense], m, v, t, group)
                for p in ps:
                    if p.grad.is_sparse:
                        self._lazy(p, t, group)
        return loss

    def _init(self, p):
        if not self.state[p]:
            self.state[p] = {
                "step": 0,
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }

    def _step_on_device(self, found_inf: torch.Tensor) -> None:
        """The update with its step counts on the device and its skip decided there: nothing read back."""
        if not (private.has_fused_adamw() and all(g.get("fused") and g["correct_bias"] for g in self.param_groups)):
            raise ValueError("AdamW.step(found_inf=...) needs the fused kernel (fused=True, correct_bias=True)")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise ValueError("AdamW.step(found_inf=...): dense gradients only")
            for p in params:
                self._init(p)
                s = self.state[p]
                if not torch.is_tensor(s["step"]):
                    s["step"] = torch.tensor(float(s["step"]), dtype=torch.float32, device=p.device)  # the kernel's
            state = [self.state[p] for p in params]
            b1, b2 = group["betas"]
            private.fused_adamw_(
                params, [p.grad for p in params], [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state],
                [s["step"] for s in state], group["lr"], b1, b2, group["weight_decay"], group["eps"], found_inf,
            )  # fmt: skip

    def _lazy(self, p, t, group):
        """The update of the rows a row-sparse gradient names; (V, ...) tables, rows along dim 0."""
        g = p.grad.coalesce()  # duplicate rows summed (a no-op where the stepper coalesced already)
        if g.sparse_dim() != 1:
            raise ValueError(f"AdamW: a sparse gradient must be sparse in its rows only, got {g.sparse_dim()} dims")
        rows, values = g.indices()[0], g.values()  # (n,) distinct rows, (n, ...) their gradients
        s = self.state[p]
        w, m, v = (x.index_select(0, rows) for x in (p, s["exp_avg"], s["exp_avg_sq"]))  # (n, ...) each
        self._update([w], [values.to(w.dtype)], [m], [v], t, group)
        for dst, src in ((p, w), (s["exp_avg"], m), (s["exp_avg_sq"], v)):
            dst.index_copy_(0, rows, src)

    def _update(self, params, grads, m, v, t, group):
        b1, b2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        if group.get("fused") and private.has_fused_adamw():
            private.fused_adamw_(params, grads, m, v, t, lr, b1, b2, wd, eps)
            return
        private.foreach_lerp_(m, grads, 1 - b1)  # m = b1 m + (1 - b1) g
        private.foreach_mul_(v, b2)
        private.foreach_addcmul_(v, grads, grads, value=1 - b2)  # v = b2 v + (1 - b2) g^2
        if group["correct_bias"]:
            alpha, eps = lr * math.sqrt(1 - b2**t) / (1 - b1**t), eps * math.sqrt(1 - b2**t)
        else:
            alpha = lr
        if wd:
            private.foreach_mul_(params, 1 - lr * wd)
        denom = private.foreach_sqrt_add(v, eps)  # sqrt(v) + e
        private.foreach_addcdiv_(params, m, denom, value=-alpha)
