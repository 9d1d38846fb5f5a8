"""`minbert soup`: the weights averaged (uniform, and greedy as Wortsman et al.'s Algorithm 1), a run folder every
command takes, and runs that cannot be averaged refused before any weight loads."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from minbert.cli import main
from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from tests.helpers import QUICKSTART, TINY
from tests.test_reliability import fails

BASE = TINY + ["epochs=1", "steps_per_epoch=3", "checkpoint_every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_encoder):
    import minbert.multitask.train as tr

    root = tmp_path_factory.mktemp("soup")
    out = {}
    sst_only = "tasks={sst: {batch_size: 8, train_limit: 64, eval_limit: 32, max_length: 24}}"  # other tasks
    for name, extra in {"a": ["seed=1"], "b": ["seed=2"], "a2": ["seed=1"], "sst": ["seed=1", sst_only]}.items():
        cfg = load_config(TrainConfig, QUICKSTART, BASE + extra + [f"checkpoint={tiny_encoder}", f"out={root / name}"])
        tr.train(cfg)
        out[name] = root / name
    return out


def best_weights(run) -> dict:
    folder = sorted((run / "checkpoints").glob("best-*"))[-1]
    return load_file(folder / "model.safetensors")


def test_a_uniform_soup_is_the_mean_of_the_runs_and_a_run_every_command_takes(runs, tmp_path, capsys):
    out = tmp_path / "soup"
    assert main(["soup", str(runs["a"]), str(runs["b"]), "--out", str(out)]) == 0
    a, b, s = best_weights(runs["a"]), best_weights(runs["b"]), best_weights(out)
    for k in s:
        if s[k].is_floating_point():
            assert torch.allclose(s[k], (a[k] + b[k]) / 2, atol=1e-7), k
    summary = json.loads((out / "summary.json").read_text())
    assert summary["soup"] == "uniform" and summary["members"] == [str(runs["a"]), str(runs["b"])]
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0  # a run: evaluated again, the same dev numbers
    assert f"{summary['dev']['overall']:.4f}" in capsys.readouterr().out
    assert main(["ensemble", str(out), str(runs["a"]), "--out", str(tmp_path / "ens")]) == 0
    assert main(["predict", str(out), "--out", str(tmp_path / "preds")]) == 0
    assert any((tmp_path / "preds").glob("*dev*"))


def test_a_soup_of_identical_runs_is_that_run(runs, tmp_path):
    """Two runs with the same seed have the same weights: their average is each of them, to rounding."""
    out = tmp_path / "same"
    assert main(["soup", str(runs["a"]), str(runs["a2"]), "--out", str(out)]) == 0
    a, s = best_weights(runs["a"]), best_weights(out)
    assert all(torch.allclose(a[k], s[k], atol=1e-7) for k in a)
    dev = json.loads((runs["a"] / "summary.json").read_text())["dev"]
    assert json.loads((out / "summary.json").read_text())["dev"] == pytest.approx(dev, abs=1e-6)


def test_a_greedy_soup_starts_from_the_best_run_and_keeps_what_does_not_hurt(runs, tmp_path):
    out = tmp_path / "greedy"
    assert main(["soup", str(runs["a"]), str(runs["b"]), "--greedy", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    own = summary["ingredients"]
    assert summary["members"][0] == max(own, key=own.get)  # the best run first
    assert summary["dev"]["overall"] >= max(own.values()) - 1e-9  # never below the best ingredient on dev


def test_runs_that_cannot_be_averaged_are_refused_before_any_work(runs, tmp_path, capsys):
    out = tmp_path / "no"
    fails(["soup", runs["a"], runs["sst"], "--out", out], capsys, "tasks", "one checkpoint")
    fails(["soup", runs["a"], "--out", out], capsys, "two or more runs")
    fails(["soup", runs["a"], runs["a"], "--out", out], capsys, "named twice")
    fails(["soup", runs["a"], runs["b"], "--out", runs["a"]], capsys, "is one of the runs")
    assert not out.exists()


def test_the_last_epochs_of_one_run_average_into_a_soup(tmp_path, tiny_encoder, capsys):
    """keep_epochs: 2 keeps the last two epochs' weights; soup --last 2 is their mean, a run like any other."""
    import minbert.multitask.train as tr

    run = tmp_path / "run"
    cfg = TINY + ["epochs=3", "steps_per_epoch=2", "keep_epochs=2", f"checkpoint={tiny_encoder}", f"out={run}"]
    tr.train(load_config(TrainConfig, QUICKSTART, cfg))
    kept = sorted((run / "checkpoints").glob("epoch-*"))
    assert len(kept) == 2
    e2, e3 = (load_file(k / "model.safetensors") for k in kept)
    assert all(torch.equal(e3[k], v) for k, v in load_file(sorted((run / "checkpoints").glob("last-*"))[-1]
                                                           / "model.safetensors").items())  # fmt: skip
    out = tmp_path / "avg"
    assert main(["soup", str(run), "--last", "2", "--out", str(out)]) == 0
    s = best_weights(out)
    assert all(torch.allclose(s[k], (e2[k] + e3[k]) / 2, atol=1e-7) for k in s if s[k].is_floating_point())
    fails(["soup", run, "--last", "3", "--out", tmp_path / "x"], capsys, "keeps 2 epoch checkpoint(s)", "keep_epochs=3")
    fails(["soup", run, run, "--last", "2", "--out", tmp_path / "x"], capsys, "give one run")
    assert not (tmp_path / "x").exists()


def test_greedy_selection_by_hand():
    """Ingredients a (own 0.7), b (0.6), c (0.5); soups score {a} 0.70, {a, b} 0.65 (b left out), {a, c} 0.72 (c
    joins): the soup is a and c, in that order."""
    from minbert.soup import greedy_members

    scores = {("a",): 0.70, ("a", "b"): 0.65, ("a", "c"): 0.72}
    members = greedy_members(["c", "b", "a"], {"a": 0.7, "b": 0.6, "c": 0.5}, lambda m: scores[tuple(m)])
    assert members == ["a", "c"]
