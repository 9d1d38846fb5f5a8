"""Every gradient combiner against an independent reference - TorchJD's aggregators (PyPI `torchjd`, each with its
own unit tests) on the same matrix of task gradients, to 1e-6 - and against one case worked by hand; and each check
shown to catch a plausible bug (a mutation of the method must fail it).

Scales: minbert's combiners are on the summed gradient's scale (combiners/base.py); TorchJD's MGDA, IMTL-G and
CAGrad give a convex combination, and its UPGrad and Aligned-MTL take a preference vector (ones here): the factor is
written beside each reference. PCGrad and GradVac draw a random order of the other tasks (ours from the step's rng,
TorchJD's from torch's): with two tasks there is one order, so they are compared on two."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from minbert.combiners import COMBINERS
from minbert.combiners.aligned_mtl import balance
from minbert.combiners.base import combine, gramian
from minbert.combiners.mgda import min_norm_weights
from minbert.registry import build

tj = pytest.importorskip("torchjd.aggregation")


def ours(name: str, **args):
    return build(COMBINERS, name, args)


def reference(name: str, T: int):
    """TorchJD's aggregator for combiner `name` and the factor that puts its output on the sum's scale."""
    ones = torch.ones(T, dtype=torch.float64)
    return {
        "pcgrad": lambda: (tj.PCGrad(), 1),
        "gradvac": lambda: (tj.GradVac(beta=0.01), 1),
        "upgrad": lambda: (tj.UPGrad(pref_vector=ones), 1),
        "mgda": lambda: (tj.MGDA(), T),
        "cagrad": lambda: (tj.CAGrad(c=0.4), T),
        "nash_mtl": lambda: (tj.NashMTL(n_tasks=T), 1),
        "imtl_g": lambda: (tj.IMTLG(), T),
        "aligned_mtl": lambda: (tj.AlignedMTL(pref_vector=ones), 1),
    }[name]()


STATELESS = ["upgrad", "mgda", "cagrad", "imtl_g", "aligned_mtl"]


def matrices(T: int, n: int, seed: int, steps: int = 1) -> list[torch.Tensor]:
    """Task gradients as training gives them: a shared component, which a task follows or opposes (mix in
    [-1, 2)), plus each task's own, at scales that differ by up to 30x; pairs conflict in about a third of them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        shared = torch.randn(1, n, generator=g, dtype=torch.float64)
        mix = torch.rand(T, 1, generator=g, dtype=torch.float64) * 3 - 1
        scales = torch.rand(T, 1, generator=g, dtype=torch.float64) * 3 + 0.1
        out.append(scales * (mix * shared + torch.randn(T, n, generator=g, dtype=torch.float64)))
    return out


def agree(name: str, fn, T: int, seeds=range(6), steps: int = 1) -> float:
    """The largest relative difference between combiner `fn` (a fresh one per seed) and TorchJD over several
    matrices (and, for the stateful ones, several steps)."""
    worst = 0.0
    for seed in seeds:
        mine, (theirs, factor) = fn(), reference(name, T)
        for G in matrices(T, 40, seed, steps):
            a, b = mine(G, random.Random(seed)), factor * theirs(G)
            worst = max(worst, float((a - b).norm() / b.norm().clamp_min(1e-12)))
    return worst


@pytest.mark.parametrize("name,T", [(n, T) for n in STATELESS for T in (2, 3, 5)] + [("pcgrad", 2)])
def test_each_combiner_equals_torchjd(name, T):
    assert agree(name, lambda: ours(name), T) < 1e-6


@pytest.mark.parametrize("name", ["gradvac", "nash_mtl"])
def test_stateful_combiners_equal_torchjd_step_after_step(name):
    """GradVac's EMA targets and Nash-MTL's warm-started weights carry from step to step: five steps each."""
    T = 2 if name == "gradvac" else 3
    assert agree(name, lambda: ours(name, **({"beta": 0.01} if name == "gradvac" else {})), T, range(3), 5) < 1e-6


# hand-worked cases: e1, e2 the unit vectors of the plane


def e(*xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def run(name: str, G: torch.Tensor, **args) -> torch.Tensor:
    return ours(name, **args)(G, random.Random(0))


def test_upgrad_by_hand():
    """g1 = e1, g2 = -e1 + e2 conflict (g1 . g2 = -1). The dual cone is {x : x.g1 >= 0, x.g2 >= 0}: g1 projects to
    g1 - (g1.g2/|g2|^2) g2 = (0.5, 0.5), g2 to g2 - (g2.g1/|g1|^2) g1 = (0, 1); the sum is (0.5, 1.5). Orthogonal
    gradients lie in the cone: the sum, unchanged."""
    G = torch.stack([e(1, 0), e(-1, 1)])
    assert torch.allclose(run("upgrad", G, reg_eps=0), e(0.5, 1.5), atol=1e-9)
    assert torch.allclose(run("upgrad", torch.stack([e(2, 0), e(0, 3)]), reg_eps=0), e(2, 3), atol=1e-9)


def test_mgda_by_hand():
    """g1 = 2 e1, g2 = e2: the min-norm point of the segment is a = (1/5, 4/5), i.e. (0.4, 0.8); times T = 2."""
    G = torch.stack([e(2, 0), e(0, 1)])
    assert torch.allclose(run("mgda", G, epsilon=1e-9, max_iters=10_000), e(0.8, 1.6), atol=1e-4)


def test_imtl_g_by_hand():
    """g1 = 2 e1, g2 = e2: g = (2 a1, a2) has equal projections on e1 and e2 when 2 a1 = a2, with a1 + a2 = 1:
    a = (1/3, 2/3), g = (2/3, 2/3); times T = 2."""
    G = torch.stack([e(2, 0), e(0, 1)])
    assert torch.allclose(run("imtl_g", G), e(4 / 3, 4 / 3), atol=1e-12)


def test_aligned_mtl_by_hand():
    """g1 = 2 e1, g2 = e2: M = diag(4, 1), B = sqrt(1) diag(1/2, 1): both rescaled to the smallest norm, 1; the
    update e1 + e2."""
    G = torch.stack([e(2, 0), e(0, 1)])
    assert torch.allclose(run("aligned_mtl", G), e(1, 1), atol=1e-12)


def test_cagrad_by_hand():
    """g1 = e1, g2 = e2: by symmetry w = (1/2, 1/2), g_w = g_0 = (1/2, 1/2), so d = g_0 + c g_0 = (1 + c) g_0;
    times T = 2. With c = 0 it is the sum."""
    G = torch.stack([e(1, 0), e(0, 1)])
    assert torch.allclose(run("cagrad", G, c=0.4), e(1.4, 1.4), atol=1e-6)
    assert torch.allclose(run("cagrad", G, c=0.0), e(1, 1), atol=1e-6)


def test_nash_mtl_by_hand():
    """g1 = 2 e1, g2 = 4 e2: M a = 1/a gives a = (1/2, 1/4), so each task's gain a_i |g_i|^2 a_i is 1 and the
    update is e1 + e2 - clipped to max_norm 1 by default."""
    G = torch.stack([e(2, 0), e(0, 4)])
    assert torch.allclose(run("nash_mtl", G, max_norm=0), e(1, 1), atol=1e-3)
    assert torch.allclose(run("nash_mtl", G), e(1, 1) / 2**0.5, atol=1e-3)


# plausible bugs: each must fail the reference check


class Mutant:
    """A combiner with one plausible bug, for showing that the reference check catches it."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, G, rng, names=None):
        return self.fn(G)


def _dual_proj(G):
    """UPGrad's QP run once, for the summed gradient (u = 1), instead of once per task and summed: TorchJD's
    DualProj, a different method."""
    c = ours("upgrad")
    M = gramian(G)
    T = len(M)
    M = M / M.diagonal().sum() + 1e-4 * torch.eye(T, dtype=M.dtype)
    v = c.qp.solve_qp(M.numpy(), np.zeros(T), -np.eye(T), -np.ones(T), solver="quadprog")
    return combine(G, torch.from_numpy(v))


def _imtl_squared_norms(G):
    """IMTL-G with the squared norms diag(M) where the norms belong."""
    M = gramian(G)
    v = torch.linalg.pinv(M) @ M.diagonal()
    return combine(G, len(G) * v / v.sum())


MUTANTS = {
    "upgrad": _dual_proj,
    "mgda": lambda G: combine(G, min_norm_weights(gramian(G))),  # the convex combination, not on the sum's scale
    "imtl_g": _imtl_squared_norms,
    "aligned_mtl": lambda G: combine(G, balance(gramian(G), "median") @ torch.ones(len(G), dtype=torch.float64)),
    "cagrad": lambda G: 2 * ours("cagrad", c=0.0)(G, None) - ours("cagrad")(G, None),  # the correction's sign
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a_plausible_bug_fails_the_reference_check(name):
    assert agree(name, lambda: Mutant(MUTANTS[name]), 3) > 1e-3


def _pcgrad_against_projected(G):
    """PCGrad projecting against the other task's already projected gradient, not its original one."""
    out = G.clone()
    for i, j in ((0, 1), (1, 0)):
        dot = out[i] @ out[j]
        if dot < 0:
            out[i] -= dot / (out[j] @ out[j]) * out[j]
    return out.sum(0)


class _GradVacSwappedEMA:
    """GradVac with its EMA's weights swapped: phi_hat <- beta phi_hat + (1 - beta) phi."""

    def __init__(self):
        self.inner = ours("gradvac", beta=0.99)  # (1 - 0.99) phi_hat + 0.99 phi == the swapped update at 0.01

    def __call__(self, G, rng, names=None):
        return self.inner(G, rng, names)


def _nash_diagonal(G):
    """Nash-MTL's weights for orthogonal gradients, 1 / |g_i|, taken whatever the gradients' angles."""
    w = 1 / gramian(G).diagonal().sqrt()
    out = combine(G, w)
    return out / out.norm() if out.norm() > 1 else out


@pytest.mark.parametrize(
    "name,T,steps,mutant",
    [
        ("pcgrad", 2, 1, lambda: Mutant(_pcgrad_against_projected)),
        ("gradvac", 2, 5, _GradVacSwappedEMA),
        ("nash_mtl", 3, 3, lambda: Mutant(_nash_diagonal)),
    ],
    ids=["pcgrad", "gradvac", "nash_mtl"],
)
def test_a_plausible_bug_fails_the_reference_check_of_the_ordered_and_stateful_ones(name, T, steps, mutant):
    assert agree(name, mutant, T, range(3), steps) > 1e-3


@pytest.mark.parametrize("name,package", [("upgrad", "quadprog"), ("cagrad", "cvxpy"), ("nash_mtl", "ecos")])
def test_a_missing_solver_package_is_one_line_before_any_work(name, package, monkeypatch, capsys, tmp_path):
    import importlib.util

    from minbert.cli import main
    from tests.helpers import QUICKSTART
    from tests.test_user_errors import error_line

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == package else real(m, *a))
    assert main(["train", str(QUICKSTART), f"combiner={name}", f"out={tmp_path / 'run'}"]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"combiner={name} needs {package}" in line and 'pip install "minbert[mtl]"' in line, line
    assert not (tmp_path / "run").exists()
