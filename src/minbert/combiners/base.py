"""What every gradient combiner is: `combiner(G, rng) -> g` for the (T, P) per-task gradient rows G; a stateful one
(GradVac's EMA targets) overrides `state_dict()` / `load_state_dict()` from `registry.Extension`.

Scale: a combiner's output is on the scale of the summed gradient (what `sum` gives, and what minbert's learning
rates are tuned for). Methods whose paper weights the tasks by a convex combination (MGDA, IMTL-G, CAGrad) or by a
preference vector of 1/T (UPGrad, Aligned-MTL) are multiplied by T, so that equal weights are the sum.
"""

from __future__ import annotations

import importlib
import importlib.util
import random

import torch

from minbert.errors import MinbertError
from minbert.registry import Extension


class Combiner(Extension):
    def __call__(self, grads: torch.Tensor, rng: random.Random, names: list[str] | None = None) -> torch.Tensor:
        """G (T, P) -> g (P,); `names` the tasks of G's rows (None: known by their index)."""
        raise NotImplementedError

    def bind(self, parameters: list[tuple[str, int]]) -> None:
        """Before the first step: the shared parameters G's columns hold, in order, as (name, number of values)."""

    def epoch_record(self) -> dict[str, float]:
        """What the combiner did this epoch, to log (then reset)."""
        return {}


GRAMIAN_CHUNK = 1 << 18  # columns per float64 block: a block of a few MB, not a float64 copy of all of G


def gramian(grads: torch.Tensor) -> torch.Tensor:
    """G G^T, the (T, T) inner products of the task gradients, in float64 and on the CPU: what the weighting methods
    solve on. Summed over blocks of columns, so that the float64 copy is one block at a time."""
    out = torch.zeros(grads.shape[0], grads.shape[0], dtype=torch.float64, device=grads.device)
    for block in grads.split(GRAMIAN_CHUNK, dim=1):
        b = block.double()
        out += b @ b.T
    return out.cpu()


def normalized(M: torch.Tensor, eps: float) -> torch.Tensor:
    """The Gramian divided by its trace (the squared Frobenius norm of G), as TorchJD's `normalize`; zeros when the
    trace is below `eps`."""
    trace = float(M.diagonal().sum())
    return M / trace if trace >= eps else torch.zeros_like(M)


def combine(grads: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i g_i: the rows of G weighted (weights from a solver on the CPU moved to G's device)."""
    return weights.to(device=grads.device, dtype=grads.dtype) @ grads


def missing_packages(what: str, packages: tuple[str, ...]) -> None:
    """Before any work (a config's check): the optional solver packages `what` needs are installed, or one line
    naming them and the extra that installs them."""
    missing = [m for m in packages if importlib.util.find_spec(m) is None]
    if missing:
        raise MinbertError(f'{what} needs {", ".join(missing)}, not installed: pip install "minbert[mtl]"')


def solver(module: str, name: str):
    """An optional solver package, imported when a combiner is built."""
    missing_packages(f"combiner={name}", (module,))
    return importlib.import_module(module)
