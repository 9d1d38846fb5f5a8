"""The divergence guard: non-finite steps are skipped and counted, a run that keeps diverging stops with one line,
and no checkpoint ever holds non-finite weights."""

import json

import pytest
import torch

from minbert.cli import main
from minbert.errors import MinbertError
from minbert.multitask.config import TrainConfig
from minbert.multitask.train import guard
from tests.test_multitask import QUICKSTART, TINY


def test_guard_skips_counts_and_stops_after_max_bad_steps(tmp_path):
    cfg, st = TrainConfig(max_bad_steps=3), {}
    assert guard(st, {"sst": 1.6}, False, 1, cfg, tmp_path)
    assert not guard(st, {"sst": float("nan")}, True, 2, cfg, tmp_path)
    assert not guard(st, {"sst": float("inf")}, True, 3, cfg, tmp_path)
    assert guard(st, {"sst": 1.5}, False, 4, cfg, tmp_path) and st["bad_steps"] == 0 and st["skipped"] == 2
    guard(st, {"sst": float("nan")}, True, 5, cfg, tmp_path)
    guard(st, {"sst": float("nan")}, True, 6, cfg, tmp_path)
    with pytest.raises(MinbertError, match=r"step 7: the loss or gradient is not finite for 3 steps in a row \(sst nan\)"):
        guard(st, {"sst": float("nan")}, True, 7, cfg, tmp_path)


def test_guard_stops_an_exploding_loss_but_not_a_noisy_one(tmp_path):
    cfg, st = TrainConfig(divergence_factor=100), {}
    for step in range(20):
        assert guard(st, {"sts": 0.5 + 0.3 * (step % 3)}, False, step, cfg, tmp_path)
    assert guard(st, {"sts": 8.0}, False, 21, cfg, tmp_path)  # 12x its mean, and below the absolute floor of 10
    with pytest.raises(MinbertError, match="task sts's loss is 1e\\+09"):
        guard(st, {"sts": 1e9}, False, 22, cfg, tmp_path)
    assert guard({}, {"sts": 1e9}, False, 1, TrainConfig(divergence_factor=0), tmp_path)  # off


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_keeps_no_non_finite_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    assert main(["train", str(QUICKSTART), *TINY, "lr=1e30", "checkpoint_every=1", f"out={run}"]) == 2
    err = capsys.readouterr().err
    assert "diverged at lr 1e+30" in err and "Traceback" not in err
    for folder in (run / "checkpoints").glob("*"):
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(str(folder / "model.safetensors")).values())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(all(v == v for v in r.values() if isinstance(v, float)) for r in records)  # no NaN written
