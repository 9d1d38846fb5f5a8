"""The weights' moving average (`ema_decay`, multitask/ema.py): its update by hand, the run evaluated, kept and
predicted with the average while it trains its own weights, and a resume bit-equal (tests/test_multitask.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.ema import EMA
from tests.helpers import QUICKSTART, TINY


def test_the_average_by_hand():
    """decay 0.5: d = min(0.5, (1 + t)/(10 + t)) is 2/11, then 3/12; from w0 = 0 with weights 1 then 3:
    s1 = (2/11) 0 + (9/11) 1, s2 = (3/12) s1 + (9/12) 3."""
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, 0.5)
    for w in (1.0, 3.0):
        with torch.no_grad():
            m.weight.fill_(w)
        ema.update(m)
    s1 = 9 / 11
    assert ema.shadow["weight"].item() == pytest.approx(3 / 12 * s1 + 9 / 12 * 3)
    with ema.swapped(m):
        assert m.weight.item() == pytest.approx(ema.shadow["weight"].item())
    assert m.weight.item() == 3.0  # its own weights back
    ema = EMA(m, 0.5)
    for _ in range(50):  # past the warm-up, d is the decay
        ema.update(m)
    assert ema.decay == 0.5 and min(0.5, (1 + 50) / (10 + 50)) == 0.5


def test_a_run_evaluates_keeps_and_predicts_the_average(tmp_path, tiny_encoder):
    import minbert.multitask.train as tr

    run = tmp_path / "ema"
    cfg = TINY + ["epochs=1", "steps_per_epoch=4", "ema_decay=0.9", f"checkpoint={tiny_encoder}", f"out={run}"]
    summary = tr.train(load_config(TrainConfig, QUICKSTART, cfg))
    best = load_file(sorted((run / "checkpoints").glob("best-*"))[-1] / "model.safetensors")
    last = sorted((run / "checkpoints").glob("last-*"))[-1]
    own, extra = load_file(last / "model.safetensors"), load_file(last / "optimizer.safetensors")
    averaged = {k.removeprefix("extra/ema/"): v for k, v in extra.items() if k.startswith("extra/ema/")}
    assert averaged and all(torch.equal(best[k], v) for k, v in averaged.items())  # the best is the average
    assert any(not torch.equal(own[k], v) for k, v in averaged.items())  # and not the run's own weights
    from minbert.multitask.run import load_data, load_run

    r = load_run(run)
    dev, _ = r.runner.evaluate(load_data(r.cfg, r.tok, ("dev",))["dev"])
    assert dev == pytest.approx(summary["dev"])  # what the summary reports is the average's
