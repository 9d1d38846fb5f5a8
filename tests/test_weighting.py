"""Loss weightings (weighting/): each against its reference - LibMTL's weighting code, transcribed here in its own
form (the weighted loss it backpropagates), whose autograd gradients give the task weights and the learned
parameters' gradients - and against a case worked by hand; a plausible bug shown to fail; the per-task path equal to
the summed one, a resume bit-exact, two processes equal to one."""

from __future__ import annotations

import json
import math

import pytest
import torch

from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.registry import build
from minbert.weighting import WEIGHTINGS
from tests.helpers import QUICKSTART, TINY

TASKS = ["sst", "quora", "sts"]


def made(name: str, **args):
    w = build(WEIGHTINGS, name, args)
    w.bind(TASKS)
    return w


def draws(seed: int, n: int = 20):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield (torch.rand(3, generator=g, dtype=torch.float64) * 3 + 0.05).tolist()


def libmtl_grads(name: str, L: list[float], s: list[float] | None = None):
    """(dloss/dL, dloss/ds) of LibMTL's weighted loss for losses L (and its learned scales s)."""
    L = torch.tensor(L, dtype=torch.float64, requires_grad=True)
    T = len(L)
    if name == "uw":  # LibMTL UW.backward
        s = torch.tensor(s, dtype=torch.float64, requires_grad=True)
        loss = (L / (2 * s.exp()) + s / 2).sum()
    elif name == "imtl_l":  # LibMTL IMTL.backward, its loss part
        s = torch.tensor(s, dtype=torch.float64, requires_grad=True)
        loss = (s.exp() * L - s).sum()
    elif name == "gls":  # LibMTL GLS.backward
        loss = torch.pow(L.prod(), 1.0 / T)
    elif name == "db_mtl":  # LibMTL DB_MTL.backward: the losses' log
        loss = torch.log(L + 1e-8).sum()
    loss.backward()
    return L.grad, (s.grad if s is not None and torch.is_tensor(s) else None)


@pytest.mark.parametrize("name", ["gls", "db_mtl"])
def test_loss_transforms_weigh_as_libmtl_s_gradient(name):
    w = made(name)
    for L in draws(0):
        ours = w.weights(dict(zip(TASKS, L)), 0)
        ref, _ = libmtl_grads(name, L)
        assert torch.allclose(torch.tensor([ours[n] for n in TASKS], dtype=torch.float64), ref, rtol=1e-10)


@pytest.mark.parametrize("name", ["uw", "imtl_l"])
def test_learned_scales_weigh_and_learn_as_libmtl_s_gradient(name):
    """The weights are dloss/dL_i and the scales' step uses dloss/ds_i of LibMTL's loss, at every step of a run."""
    w = made(name, lr=0.05)
    for L in draws(1):
        s = w.s.tolist()
        ref_w, ref_s = libmtl_grads(name, L, s)
        ours = w.weights(dict(zip(TASKS, L)), 0)
        assert torch.allclose(torch.tensor([ours[n] for n in TASKS], dtype=torch.float64), ref_w, rtol=1e-12)
        assert torch.allclose(w.grad(dict(zip(TASKS, L))), ref_s, rtol=1e-12)
        w.learn(dict(zip(TASKS, L)))
    assert not torch.allclose(w.s, torch.full((3,), w.init, dtype=torch.float64))  # they moved


def test_uw_by_hand():
    """s = -0.5: w = 1 / (2 e^-0.5) = 0.8244; a loss of 2 gives ds = 1/2 - 2 / (2 e^-0.5) < 0, and Adam's first step
    moves s by exactly lr against the gradient's sign: s = -0.5 + 0.025."""
    w = made("uw")
    assert w.weights({"sst": 2.0}, 0) == pytest.approx({"sst": 1 / (2 * math.exp(-0.5))})
    w.learn({"sst": 2.0})
    assert w.s.tolist() == pytest.approx([-0.475, -0.5, -0.5])


def test_imtl_l_settles_where_every_scaled_loss_is_one():
    w = made("imtl_l", lr=0.05)
    L = {"sst": 4.0, "quora": 0.5, "sts": 1.0}
    for _ in range(2000):
        w.learn(L)
    scaled = {n: w.weights(L, 0)[n] * L[n] for n in TASKS}
    assert scaled == pytest.approx(dict.fromkeys(TASKS, 1.0), abs=1e-2)


def test_gls_and_db_mtl_by_hand():
    """Losses 1, 4, 2: GLS's geometric mean is 2, so w = 2 / (3 L) = (2/3, 1/6, 1/3); DB-MTL's w = 1 / L."""
    L = {"sst": 1.0, "quora": 4.0, "sts": 2.0}
    assert made("gls").weights(L, 0) == pytest.approx({"sst": 2 / 3, "quora": 1 / 6, "sts": 1 / 3})
    assert made("db_mtl").weights(L, 0) == pytest.approx({"sst": 1.0, "quora": 0.25, "sts": 0.5}, rel=1e-7)


def test_dwa_as_libmtl_and_by_hand():
    """Epoch means 1, 1, 1 then 0.5, 1, 2: r = (0.5, 1, 2), w = 3 softmax(r / 2) (LibMTL's DWA with T = 2); 1 for
    the first two epochs."""
    w = made("dwa")
    for means in ({"sst": 1.0, "quora": 1.0, "sts": 1.0}, {"sst": 0.5, "quora": 1.0, "sts": 2.0}):
        assert w.weights(means, 0) == pytest.approx(dict.fromkeys(TASKS, 1.0))
        for _ in range(3):  # three steps of equal losses: the epoch's mean
            w.learn(means)
        w.epoch_record()
    r = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    ref = 3 * torch.softmax(r / 2.0, 0)
    assert w.weights({"sst": 9.0, "sts": 9.0}, 0) == pytest.approx({"sst": float(ref[0]), "sts": float(ref[2])})


def test_rlw_is_t_times_a_softmax_of_a_normal_draw_fixed_by_the_step():
    w = made("rlw")
    a, b = w.weights(dict.fromkeys(TASKS, 1.0), 7), w.weights(dict.fromkeys(TASKS, 1.0), 8)
    assert sum(a.values()) == pytest.approx(3.0) and all(v > 0 for v in a.values()) and a != b
    assert made("rlw").weights({"sts": 1.0}, 7) == {"sts": a["sts"]}  # the same draw: a resume replays it
    draws = torch.tensor([list(w.weights(dict.fromkeys(TASKS, 1.0), s).values()) for s in range(2000)])
    assert draws.mean(0).tolist() == pytest.approx([1.0] * 3, abs=0.05)  # E[T softmax(N(0, I))_i] = 1


class _UWWithoutTheTwo:
    """UW weighing by 1 / exp(s) (the 1/2 of the Gaussian likelihood dropped)."""

    def __init__(self):
        self.w = made("uw")

    def weights(self, losses, step):
        return {n: 2 * v for n, v in self.w.weights(losses, step).items()}


def test_a_plausible_bug_fails_the_reference_check():
    bad, L = _UWWithoutTheTwo(), next(draws(2))
    ref, _ = libmtl_grads("uw", L, [-0.5] * 3)
    ours = bad.weights(dict(zip(TASKS, L)), 0)
    assert not torch.allclose(torch.tensor([ours[n] for n in TASKS], dtype=torch.float64), ref, rtol=1e-3)


# in training

BASE = TINY + ["epochs=1", "steps_per_epoch=3", "checkpoint_every=0", "encoder_dropout=0", "log_every=1"]
BASE += [f"tasks.{t}.dropout=0" for t in TASKS]


def weights_of(run) -> dict:
    from safetensors.torch import load_file

    folder = sorted((run / "checkpoints").glob("last-*"))[-1]
    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize("weighting", ["uw", "gls"])
def test_the_per_task_path_weighs_as_the_summed_one(tmp_path, tiny_encoder, weighting):
    """conflict_stats forces one backward per task, each row times its weight: the same update as one backward of
    the weighted sum (a learned weighting and a loss-dependent one)."""
    import minbert.multitask.train as tr

    base = BASE + [f"checkpoint={tiny_encoder}", f"weighting={weighting}"]
    tr.train(load_config(TrainConfig, QUICKSTART, base + [f"out={tmp_path / 'a'}"]))
    tr.train(load_config(TrainConfig, QUICKSTART, base + ["conflict_stats=true", f"out={tmp_path / 'b'}"]))
    a, b = weights_of(tmp_path / "a"), weights_of(tmp_path / "b")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    equal = weights_of_run(tmp_path, tiny_encoder)
    assert max((a[k] - equal[k]).abs().max().item() for k in a) > 1e-6  # and the weighting changed the update


def weights_of_run(tmp_path, tiny_encoder) -> dict:
    import minbert.multitask.train as tr

    tr.train(load_config(TrainConfig, QUICKSTART, BASE + [f"checkpoint={tiny_encoder}", f"out={tmp_path / 'eq'}"]))
    return weights_of(tmp_path / "eq")


def test_weights_are_logged_and_plotted(tmp_path, tiny_encoder, monkeypatch):
    import minbert.multitask.train as tr
    import minbert.plot
    from minbert.plot import plot_run

    run = tmp_path / "uw" / "seed1"  # as a sweep names its runs
    tr.train(load_config(TrainConfig, QUICKSTART, BASE + [f"checkpoint={tiny_encoder}", "weighting=uw", f"out={run}"]))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "weight/sst" in r]
    assert len(steps) == 3 and steps[0]["weight/sst"] == pytest.approx(1 / (2 * math.exp(-0.5)))
    assert steps[-1]["weight/sst"] != steps[0]["weight/sst"]  # learned
    assert run / "plots" / "task_weights.png" in plot_run(run)
    titles = []
    monkeypatch.setattr(minbert.plot, "curves", lambda rows, prefix, x, y, title, *rest: titles.append(title))
    plot_run(run)
    assert "task weights: uw/seed1" in titles  # the variant named, not only the seed


class LibMTLFAMO:
    """LibMTL's FAMO (weighting/FAMO.py) transcribed: its loss, and update_w with torch.optim.Adam."""

    def __init__(self, T: int, lr: float = 0.025, gamma: float = 1e-3):
        self.w = torch.zeros(T, dtype=torch.float64, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=lr, weight_decay=gamma)
        self.min_losses = torch.zeros(T, dtype=torch.float64)

    def backward(self, losses: torch.Tensor) -> torch.Tensor:
        """dloss/dL of FAMO's loss: the weights its backward applies."""
        losses = losses.clone().requires_grad_(True)
        self.prev_losses = losses.detach()
        z = torch.softmax(self.w, -1)
        D = losses - self.min_losses + 1e-8
        c = (z / D).sum().detach()
        (D.log() * z / c).sum().backward()
        return losses.grad

    def update_w(self, curr_losses: torch.Tensor) -> None:
        delta = (self.prev_losses - self.min_losses + 1e-8).log() - (curr_losses - self.min_losses + 1e-8).log()
        d = torch.autograd.grad(torch.softmax(self.w, -1), self.w, grad_outputs=delta.detach())[0]
        self.opt.zero_grad(set_to_none=False)
        self.w.grad = d
        self.opt.step()


def test_famo_weighs_and_learns_as_libmtl_s_famo():
    """Ten steps: the weights (times T, minbert's scale) and the logits after each update, equal to the reference."""
    ours, ref = made("famo"), LibMTLFAMO(3)
    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        L = torch.rand(3, generator=g, dtype=torch.float64) * 2 + 0.1
        after = L * (0.5 + torch.rand(3, generator=g, dtype=torch.float64))  # some fall, some rise
        w = ours.weights(dict(zip(TASKS, L.tolist())), 0)
        assert torch.allclose(torch.tensor([w[n] for n in TASKS], dtype=torch.float64), 3 * ref.backward(L))
        ours.learn(dict(zip(TASKS, L.tolist())), dict(zip(TASKS, after.tolist())))
        ref.update_w(after)
        assert torch.allclose(ours.xi, ref.w.detach(), atol=1e-12)
    assert not torch.allclose(ours.xi, torch.zeros(3, dtype=torch.float64))


def test_famo_raises_the_task_whose_loss_falls_slowest():
    """By hand: sst's loss halves every step, quora's stays: FAMO's logits move to quora."""
    w = made("famo", lr=0.1)
    for _ in range(5):
        w.learn({"sst": 1.0, "quora": 1.0, "sts": 1.0}, {"sst": 0.5, "quora": 1.0, "sts": 0.9})
    z = torch.softmax(w.xi, 0)
    assert z[1] > z[2] > z[0]


@pytest.mark.parametrize("name", ["famo", "gls"])
def test_a_step_of_one_task_is_its_plain_loss(name):
    """FAMO's and GLS's weights compare the tasks of a step: with one task in it (annealed sampling), whatever FAMO
    has learned, the weight is 1, the summed scale's weight of a lone task (FAMO times T would give 3)."""
    w = made(name)
    if name == "famo":
        w.xi = torch.tensor([0.7, -0.2, 1.3], dtype=torch.float64)
    for n, loss in zip(TASKS, [0.3, 1.7, 4.0]):
        assert w.weights({n: loss}, 0) == pytest.approx({n: 1.0}, abs=1e-12)


def test_famo_trains_with_its_extra_forward_pass(tmp_path, tiny_encoder):
    import minbert.multitask.train as tr

    run = tmp_path / "famo"
    cfg = BASE + [f"checkpoint={tiny_encoder}", "weighting=famo", f"out={run}"]
    tr.train(load_config(TrainConfig, QUICKSTART, cfg))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    weights = [r["weight/sst"] for r in records if "weight/sst" in r]
    assert len(weights) == 3 and len(set(weights)) == 3  # it learned from each step
