"""Distillation (multitask/distill.py): the term against hand-computed cases, and a student trained end to end on a
teacher run's cached soft outputs."""

import json
import math

import pytest
import torch

from minbert.cli import main
from minbert.model.outputs import HeadOutput
from minbert.multitask.distill import distill_loss
from tests.helpers import QUICKSTART, TINY, run_cli
from tests.test_user_errors import error_line


def test_a_classification_term_is_t_squared_times_the_tempered_kl():
    p, z, t = [0.7, 0.2, 0.1], [1.0, 0.0, -1.0], 2.0

    def tempered(logs):  # softmax(x / t)
        e = [math.exp(x / t) for x in logs]
        return [x / sum(e) for x in e]

    q, s = tempered([math.log(x) for x in p]), tempered(z)
    want = t * t * sum(qi * math.log(qi / si) for qi, si in zip(q, s))
    got = distill_loss(HeadOutput(logits=torch.tensor([z])), torch.tensor([p]), False, None, t)
    assert got.item() == pytest.approx(want, rel=1e-4)
    # at T = 1 it is the plain KL of the teacher's distribution from the student's
    plain = distill_loss(HeadOutput(logits=torch.tensor([z])), torch.tensor([p]), False, None, 1.0)
    s1 = tempered([x * 2 for x in z])  # softmax(z): undo the /2 of tempered()
    assert plain.item() == pytest.approx(sum(pi * math.log(pi / si) for pi, si in zip(p, s1)), rel=1e-4)


def test_a_binary_logit_term_is_the_tempered_bernoulli_kl():
    p, z, t = 0.8, 0.5, 2.0
    q = 1 / (1 + math.exp(-math.log(p / (1 - p)) / t))  # sigmoid(logit(0.8) / 2) = 2/3
    s = 1 / (1 + math.exp(-z / t))
    want = t * t * (q * math.log(q / s) + (1 - q) * math.log((1 - q) / (1 - s)))
    got = distill_loss(HeadOutput(score=torch.tensor([z])), torch.tensor([p]), False, None, t)
    assert q == pytest.approx(2 / 3) and got.item() == pytest.approx(want, rel=1e-4)


def test_scores_are_matched_by_squared_error():
    out = HeadOutput(score=torch.tensor([4.0, 1.0]))
    assert distill_loss(out, torch.tensor([3.0, 1.5]), True, 5.0, 2.0).item() == pytest.approx((1 + 0.25) / 2)
    # a similarity head on a binary task: its score on the cosine's scale against P(1)
    assert distill_loss(HeadOutput(score=torch.tensor([0.5])), torch.tensor([0.8]), False, 1.0, 2.0).item() == (
        pytest.approx(0.09)
    )


def test_a_student_trains_on_the_teachers_cached_soft_outputs(tiny_encoder, tmp_path):
    from safetensors.torch import load_file

    from minbert.multitask.run import load_data, load_run

    teacher, student = tmp_path / "teacher", tmp_path / "student"
    tiny = [*TINY, f"checkpoint={tiny_encoder}"]  # the caching and the extra term, not the MiniLM's numbers
    run_cli(str(QUICKSTART), *tiny, f"out={teacher}")
    distill = [f"distill.teachers=[{teacher}]", "distill.weight=0.5"]
    run_cli(str(QUICKSTART), *tiny, *distill, f"out={student}")
    cached = load_file(str(student / "teacher.safetensors"))
    assert set(cached) == {"sst", "quora", "sts"}
    r = load_run(teacher)
    data = load_data(r.cfg, r.tok, ("train",))["train"]
    for t in ("sst", "sts"):
        assert torch.allclose(cached[t], r.runner.soft(t, data[t]), atol=1e-5)
    assert cached["sst"].shape == (96, 5) and torch.allclose(cached["sst"].sum(-1), torch.ones(96))
    # the same seed and data as the teacher's own run: the first step's gold loss is the same, the logged loss not
    first = lambda run: json.loads((run / "metrics.jsonl").read_text().splitlines()[0])  # noqa: E731
    a, b = first(teacher), first(student)
    losses = sorted(k for k in a if k.startswith("train/") and k in b)
    assert a["step"] == b["step"] == 1 and losses
    assert all(math.isfinite(b[k]) and a[k] != pytest.approx(b[k]) for k in losses), (a, b)
    assert (student / "summary.json").is_file()


def test_a_teacher_that_is_not_a_run_is_one_line(tmp_path, capsys):
    argv = ["train", str(QUICKSTART), *TINY, f"distill.teachers=[{tmp_path}]", f"out={tmp_path / 'run'}"]
    assert main(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert f"distill.teachers[0]: {tmp_path}: no config.yaml" in line and "name a folder `minbert train` made" in line
    assert not (tmp_path / "run").exists()
    assert main(["train", str(QUICKSTART), "distill.weight=1.5", f"out={tmp_path / 'run'}"]) == 2
    assert "distill.weight: 1.5 must be in [0, 1]" in error_line(capsys.readouterr().err)
