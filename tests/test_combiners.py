"""PCGrad and GradVac on hand-worked gradients."""

import math
import random

import pytest
import torch

from minbert.combiners import COMBINERS
from minbert.combiners.gradvac import GradVac
from minbert.combiners.pcgrad import PCGrad
from minbert.multitask.conflicts import ConflictStats


def test_pcgrad_two_conflicting_tasks_by_hand():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # g1 . g2 = -1 < 0
    # g1 - (g1.g2 / |g2|^2) g2 = (1, 0) + 0.5 (-1, 1) = (0.5, 0.5)
    # g2 - (g2.g1 / |g1|^2) g1 = (-1, 1) + (1, 0) = (0, 1)
    assert torch.allclose(PCGrad()(g, random.Random(0)), torch.tensor([0.5, 1.5]))


def test_pcgrad_three_tasks_in_3d_by_hand():
    g = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])  # only tasks 1 and 2 conflict
    assert torch.allclose(PCGrad()(g, random.Random(3)), torch.tensor([0.5, 1.5, 2.0]))


def test_pcgrad_projects_against_original_gradients_in_the_drawn_order():
    g = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [-1.0, -2.0, 1.0]])
    assert (g @ g.T)[0, 1] < 0 and (g @ g.T)[0, 2] < 0 and (g @ g.T)[1, 2] < 0  # every pair conflicts
    rng = random.Random(5)
    expected = g.clone()
    for i in range(3):  # the algorithm written out, consuming the same random draws
        others = [j for j in range(3) if j != i]
        rng.shuffle(others)
        for j in others:
            d = expected[i] @ g[j]
            if d < 0:
                expected[i] = expected[i] - d / (g[j] @ g[j]) * g[j]
    assert torch.allclose(PCGrad()(g, random.Random(5)), expected.sum(0))
    assert not torch.allclose(expected.sum(0), g.sum(0))


def test_pcgrad_equals_sum_without_conflicts():
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert torch.equal(PCGrad()(g, random.Random(0)), g.sum(0))
    assert torch.equal(COMBINERS["sum"]()(g, random.Random(0)), g.sum(0))


def test_gradvac_raises_cosine_exactly_to_target():
    gv = GradVac(beta=0.5)
    gv.target = {"0,1,0": 0.5, "1,0,0": -1.0}  # task 0 aims at cos 0.5 with task 1; task 1 never adjusts
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos = 0 < 0.5
    out = gv(g, random.Random(0))
    # coefficient |g0| (0.5 sqrt(1 - 0) - 0 sqrt(1 - 0.25)) / (|g1| sqrt(1 - 0.25)) = 0.5 / sqrt(0.75)
    g0 = torch.tensor([1.0, 0.5 / math.sqrt(0.75)])
    assert torch.allclose(out, g0 + g[1])
    assert math.isclose(float(g0 @ g[1] / g0.norm()), 0.5, rel_tol=1e-6)
    assert gv.target["0,1,0"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.0)  # EMA with the pre-adjustment cosine
    assert gv.applied == 1


def test_gradvac_general_case_hits_target():
    torch.manual_seed(0)
    gi, gj = torch.randn(50), torch.randn(50)
    gv = GradVac()
    natural = float(gi @ gj / (gi.norm() * gj.norm()))
    for target in (natural + 0.05, 0.2, 0.7):
        assert target > natural
        gv.target = {"0,1,0": target, "1,0,0": -1.0}
        out = gv(torch.stack([gi, gj]), random.Random(0)) - gj
        assert math.isclose(float(out @ gj / (out.norm() * gj.norm())), target, abs_tol=1e-5)


def test_gradvac_leaves_gradients_alone_when_cosine_above_target():
    g = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # cos = 0.707 >= targets of 0
    gv = GradVac(beta=0.1)
    assert torch.equal(gv(g, random.Random(0)), g.sum(0))
    assert gv.applied == 0 and gv.target["0,1,0"] == pytest.approx(0.1 * math.sqrt(0.5))


def test_gradvac_with_parameter_groups():
    gv = GradVac(groups=[(0, 2), (2, 4)])
    g = torch.tensor([[1.0, 0.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 0.0]])
    gv(g, random.Random(0))
    assert set(gv.target) == {"0,1,0", "0,1,1", "1,0,0", "1,0,1"}


def test_conflict_statistics():
    stats = ConflictStats()
    stats.update(torch.tensor([[1.0, 0.0], [-1.0, 0.1], [0.0, 1.0]]), ["sst", "quora", "sts"])
    stats.update(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), ["sst", "quora", "sts"])
    s = stats.summary()
    assert s["conflict/sst-quora/negative"] == 1 and s["conflict/sst-quora/pairs"] == 2
    assert s["conflict/sst-sts/negative"] == 0 and s["conflict/sst-sts/mean_cos"] == pytest.approx(0.0)
