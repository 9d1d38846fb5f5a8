"""PCGrad and GradVac on hand-worked gradients."""

import math
import random

import pytest
import torch

from minbert.combiners import COMBINERS, base
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


def reference_gradvac(grads, targets, beta, rng, phi_from_original=False, on_fix=False):
    """The paper's Algorithm 1 in LibMTL's loop (LibMTL/weighting/GradVac.py), transcribed: for each task i the
    others in rng's order, phi from the *adjusted* g_i against the original g_j, the EMA updated every visit (the
    paper; with on_fix, only when it adjusts, as LibMTL's code does)."""
    pc, T = grads.clone(), grads.shape[0]
    for i in range(T):
        order = [j for j in range(T) if j != i]
        rng.shuffle(order)
        for j in order:
            gi, gj = pc[i], grads[j]
            g = grads[i] if phi_from_original else gi  # the bug the test must catch
            rho = float(g @ gj / (g.norm() * gj.norm()))
            t = targets[(i, j)]
            if rho < t:
                w = (
                    gi.norm()
                    * (t * math.sqrt(1 - rho**2) - rho * math.sqrt(1 - t**2))
                    / (gj.norm() * math.sqrt(1 - t**2))
                )
                pc[i] = gi + w * gj
            if rho < t or not on_fix:
                targets[(i, j)] = (1 - beta) * t + beta * rho
    return pc.sum(0), targets


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gradvac_three_tasks_match_the_reference_in_the_drawn_order(seed):
    """Three tasks, every pair below its target, so each task is adjusted twice: the second adjustment sees the
    first (phi from the adjusted g_i), and the order the rng draws changes the result (the shuffle matters)."""
    torch.manual_seed(10)
    grads = torch.randn(3, 6)
    targets = {(i, j): 0.6 for i in range(3) for j in range(3) if i != j}
    gv = GradVac(beta=0.3)
    gv.target = {f"{i},{j},0": t for (i, j), t in targets.items()}
    ours = gv(grads, random.Random(seed))
    ref, ref_targets = reference_gradvac(grads, dict(targets), 0.3, random.Random(seed))
    assert torch.allclose(ours, ref, atol=1e-5)
    assert all(gv.target[f"{i},{j},0"] == pytest.approx(t, abs=1e-6) for (i, j), t in ref_targets.items())
    assert gv.applied == 6
    # what the test would miss without these: the natural order (no shuffle) gives another sum whenever the drawn
    # order differs from it, and so does phi from the unadjusted gradient
    replay, natural = random.Random(seed), False
    for i in range(3):
        o = [j for j in range(3) if j != i]
        replay.shuffle(o)
        natural |= o != sorted(o)
    no_shuffle = random.Random(seed)
    no_shuffle.shuffle = lambda x: None
    unshuffled, _ = reference_gradvac(grads, dict(targets), 0.3, no_shuffle)
    assert natural == (not torch.allclose(unshuffled, ours, atol=1e-4))
    stale, _ = reference_gradvac(grads, dict(targets), 0.3, random.Random(seed), phi_from_original=True)
    assert not torch.allclose(stale, ours, atol=1e-4)


def test_gradvac_with_parameter_groups():
    gv = GradVac(groups=[(0, 2), (2, 4)])
    g = torch.tensor([[1.0, 0.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 0.0]])
    gv(g, random.Random(0))
    assert set(gv.target) == {"0,1,0", "0,1,1", "1,0,0", "1,0,1"}


def test_gradvac_per_layer_groups_the_columns_by_encoder_layer():
    from minbert.combiners.gradvac import layer_of

    params = [("embeddings.word_embeddings.weight", 4), ("embeddings.LayerNorm.bias", 2),
              ("encoder.layer.0.attention.self.query.weight", 3), ("encoder.layer.0.output.dense.bias", 1),
              ("encoder.layer.1.output.dense.bias", 2), ("pooler.dense.weight", 2)]  # fmt: skip
    gv = GradVac(per="layer")
    gv.bind(params)
    assert gv.groups == [(0, 6), (6, 10), (10, 12), (12, 14)]
    assert layer_of("encoder.layer.11.intermediate.dense.weight") == "encoder.layer.11"
    per_param = GradVac(per="parameter")
    per_param.bind(params)
    assert len(per_param.groups) == 6 and per_param.groups[-1] == (12, 14)
    everything = GradVac()
    everything.bind(params)
    assert everything.groups is None  # one group: the whole row


def test_gradvac_counts_fixes_per_epoch_and_ordered_task_pair_by_hand():
    """Two tasks, two groups: the first group's cosine is -0.707 (below the starting target 0: fixed both ways),
    the second's +0.707 (left alone). Per epoch: 1 fix of 2 checks per ordered pair, both rows altered."""
    gv = GradVac(groups=[(0, 2), (2, 4)])
    g = torch.tensor([[1.0, 0.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 0.0]])
    gv(g, random.Random(0), ["sst", "sts"])
    assert set(gv.target) == {"sst,sts,0", "sst,sts,1", "sts,sst,0", "sts,sst,1"}
    record = gv.epoch_record()
    assert record == {"gradvac/altered": 2, "gradvac/rows": 2, "gradvac/sst-sts/fixes": 1, "gradvac/sst-sts/checks": 2,
                      "gradvac/sts-sst/fixes": 1, "gradvac/sts-sst/checks": 2}  # fmt: skip
    assert gv.epoch_record() == {"gradvac/altered": 0, "gradvac/rows": 0}  # counted afresh each epoch
    gv(torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]), random.Random(0), ["sst", "sts"])
    assert gv.epoch_record()["gradvac/altered"] == 0  # cosine 1 is above every target: nothing altered


def test_conflict_statistics():
    stats = ConflictStats()
    stats.update(torch.tensor([[1.0, 0.0], [-1.0, 0.1], [0.0, 1.0]]), ["sst", "quora", "sts"])
    stats.update(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), ["sst", "quora", "sts"])
    s = stats.summary()
    assert s["conflict/sst-quora/negative"] == 1 and s["conflict/sst-quora/pairs"] == 2
    assert s["conflict/sst-sts/negative"] == 0 and s["conflict/sst-sts/mean_cos"] == pytest.approx(0.0)
    # cos((1, 0), (-1, 0.1)) = -1 / sqrt(1.01), then cos((1, 0), (1, 0)) = 1
    assert s["conflict/sst-quora/mean_cos"] == pytest.approx((1 - 1 / math.sqrt(1.01)) / 2)


def test_gramian_in_blocks_equals_one_float64_product(monkeypatch):
    g = torch.randn(3, 11, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(base, "GRAMIAN_CHUNK", 4)  # blocks of 4, 4 and 3 columns
    M = base.gramian(g)
    assert M.dtype == torch.float64
    assert torch.allclose(M, g.double() @ g.double().T, rtol=1e-12, atol=1e-12)


def test_gradvac_moving_its_target_only_on_a_fix_matches_libmtl():
    """update=on_fix (LibMTL's GradVac, and the code report 003 built on): over several steps with pairs above and
    below their targets, the sums and every target equal LibMTL's loop; the paper's rule (update=always) gives other
    targets as soon as a pair is not fixed."""
    torch.manual_seed(3)
    steps = [torch.randn(3, 5) for _ in range(6)]
    start = {(i, j): (0.3 if (i + j) % 2 else -0.2) for i in range(3) for j in range(3) if i != j}
    for update in ("on_fix", "always"):
        gv = GradVac(beta=0.2, update=update)
        gv.target = {f"{i},{j},0": t for (i, j), t in start.items()}
        targets, ours_rng, ref_rng = dict(start), random.Random(7), random.Random(7)
        for g in steps:
            ours = gv(g, ours_rng)
            ref, targets = reference_gradvac(g, targets, 0.2, ref_rng, on_fix=True)
        same = all(gv.target[f"{i},{j},0"] == pytest.approx(t, abs=1e-6) for (i, j), t in targets.items())
        assert same == (update == "on_fix")
        if update == "on_fix":
            assert torch.allclose(ours, ref, atol=1e-5)
            assert 0 < gv.applied < 6 * 6  # some tests fixed, some not: the rule was exercised both ways
