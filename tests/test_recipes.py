"""Every recipe in configs/reports/ runs, in its budget form, for a few steps on a few real rows; every report's sweep
file (configs/reports/NNN.yaml: its results rows as variants) loads, and each row's config validates."""

import json
import math
from pathlib import Path

import pytest

from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.train import train

REPORTS = Path(__file__).parents[1] / "configs" / "reports"
SWEEPS = sorted(p for p in REPORTS.glob("*.yaml") if p.stem.isdigit())
RECIPES = sorted(p for p in REPORTS.glob("*.yaml") if not p.stem.isdigit())
SMOKE = ["epochs=1", "steps_per_epoch=2", "precision=fp32", "checkpoint_every=0"] + [
    f"tasks.{t}.{k}={v}"
    for t in ("sst", "quora", "sts")
    for k, v in (("train_limit", 16), ("eval_limit", 16), ("batch_size", 4), ("max_length", 16))
]


def test_there_is_a_recipe_for_every_report():
    assert {p.name[:3] for p in RECIPES} == {"000", "001", "002", "003", "004"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_report_sweep_loads_with_published_rows(path, tmp_path):
    from minbert.sweep import load_sweep

    sweep = load_sweep(path, steps=1000)  # every variant's config validates, bounded to 1,000 steps
    assert sweep.published and set(sweep.published) <= set(sweep.variants)
    for name, extra in sweep.variants.items():
        cfg = load_config(TrainConfig, sweep.base, [*sweep.overrides, *extra])
        assert cfg.steps_per_epoch * cfg.epochs <= 1000, name


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_smoke(recipe, tmp_path):
    cfg = load_config(TrainConfig, recipe, SMOKE + [f"out={tmp_path / 'run'}"], budget=True)
    summary = train(cfg)
    assert all(math.isfinite(v) for v in summary["dev"].values()) and summary["steps"] == 2
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    if cfg.conflict_stats:
        assert any(k.startswith("conflict/") for k in records[-1])
    for name, t in cfg.tasks.items():
        if t.margin_step:
            assert f"margin/{name}" in records[-1]
