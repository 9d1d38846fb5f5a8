"""The single-task classifier end to end, on a few real SST/CFIMDB rows and the embedded checkpoint: a one-task
config of the multitask core, frozen (cached embeddings) or fine-tuned."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import minbert
from minbert.classify import ClassifyConfig, classify
from minbert.cli import build_parser, config_from_args, main
from minbert.data import DATASETS, data_dir, load_split, read_predictions
from minbert.errors import MinbertError
from minbert.multitask.state import snapshot_folder


def small(tmp_path, **kw):
    # dev and test cut to 128 rows: the tests check the files and metrics agree, not the handout's full sets (the
    # fine-tuning test does)
    base = dict(
        train_limit=64, eval_limit=128, batch_size=16, max_length=32, epochs=2, seed=3, out=str(tmp_path / "run")
    )
    return ClassifyConfig(**{**base, **kw})


def dev_accuracy_of_file(path, task="sst"):
    preds = read_predictions(path)
    ex = [e for e in load_split(DATASETS[task], "dev", data_dir()) if e.id in preds]  # the run's eval_limit rows
    assert len(ex) == len(preds)
    return sum(int(preds[e.id]) == e.label for e in ex) / len(ex)


def test_frozen_mode_trains_only_the_head_on_cached_embeddings(tmp_path, ckpt, capsys):
    before = load_file(str(ckpt / "model.safetensors"))
    summary = classify(small(tmp_path, mode="frozen"))
    run = tmp_path / "run"
    after = load_file(str(snapshot_folder(run, "best") / "model.safetensors"))
    for k, v in before.items():
        if k != "embeddings.position_ids":
            assert torch.equal(after["bert." + k], v), f"frozen encoder changed {k}"
    head = after["heads.sst.out.weight"]
    assert head.shape == (5, 384) and head.abs().sum() > 0
    # the cached embeddings are the encoder's: evaluating the saved run (which runs the encoder) agrees with the
    # accuracy the run reported from its cache, and with its prediction file
    assert main(["evaluate", str(run)]) == 0
    shown = capsys.readouterr().out
    assert f"{summary['dev/acc']:.4f}" in shown
    assert abs(dev_accuracy_of_file(run / "predictions" / "frozen-sst-dev-out.csv") - summary["dev/acc"]) < 1e-9


def test_finetune_run_directory(tmp_path, ckpt):
    summary = classify(small(tmp_path, mode="finetune", max_steps=3, epochs=1, eval_limit=0))
    run = tmp_path / "run"
    assert summary["steps"] == 3 and summary["stopped"] == "max_steps 3 reached"
    saved = (run / "config.yaml").read_text()
    assert "lr: 5.0e-05" in saved and "frozen: false" in saved and "max_steps: 3" in saved  # resolved, as it ran
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == 1 and "dev/sst/acc" in records[-1]
    dev = read_predictions(run / "predictions" / "finetune-sst-dev-out.csv")
    test = read_predictions(run / "predictions" / "finetune-sst-test-out.csv")
    assert len(dev) == 1101 and len(test) == 2210 and set(dev.values()) <= set("01234")
    assert abs(dev_accuracy_of_file(run / "predictions" / "finetune-sst-dev-out.csv") - summary["dev/acc"]) < 1e-9
    assert json.loads((run / "summary.json").read_text())["dev/acc"] == summary["dev/acc"]
    best = load_file(str(snapshot_folder(run, "best") / "model.safetensors"))
    orig = load_file(str(ckpt / "model.safetensors"))
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(best["bert." + key], orig[key])


def test_a_classifier_run_is_a_run_like_any_other(tmp_path, capsys):
    """minbert.load predicts with it, and `minbert predict` writes the handout's file names again."""
    classify(small(tmp_path, mode="frozen", epochs=1))
    run = tmp_path / "run"
    out = minbert.load(run).predict("sst", ["a gorgeous, witty film", "a tedious mess"])
    assert len(out) == 2 and all(0 <= o["label"] <= 4 for o in out)
    assert main(["predict", str(run), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "frozen-sst-test-out.csv").read_text() == (
        run / "predictions" / "frozen-sst-test-out.csv"
    ).read_text()
    # a second classifier into the same folder is refused before any work; --overwrite replaces it
    assert main(["classify", "--mode", "frozen", "--out", str(run)]) == 2
    assert f"{run}: already holds a run" in capsys.readouterr().err
    flags = ["--mode", "frozen", "--out", str(run), "train_limit=16", "eval_limit=32", "max_length=16", "epochs=1"]
    flags.append("--overwrite")
    assert main(["classify", *flags]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 1  # 16 examples in one batch of 32


def test_cfimdb_frozen(tmp_path):
    summary = classify(small(tmp_path, task="cfimdb", mode="frozen", max_length=64))
    assert (tmp_path / "run" / "predictions" / "frozen-cfimdb-test-out.csv").is_file()
    assert summary["task"] == "cfimdb" and 0 <= summary["dev/acc"] <= 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["classify", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minbert: error: ") and "ids-sst-train.csv" in err and err.count("\n") == 1
    assert main(["classify", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["classify", "epochs=two"]) == 2
    assert "epochs: expected int" in capsys.readouterr().err
    assert main(["classify", "colour=red"]) == 2
    assert "unknown config key 'colour'; valid keys here: task, mode" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "minbert", "classify", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--mode {frozen,finetune}" in out.stdout and "--bf16" in out.stdout


def test_frozen_multitask_with_a_cross_encoder_scores_as_its_encoder_does(tmp_path, capsys):
    """frozen=true on the multitask core: sentence, cross-encoded and bi-encoded pair tasks train on cached rows; the
    saved run, evaluated by running the encoder, reproduces the dev metrics the run reported from its cache."""
    from tests.helpers import QUICKSTART, TINY, run_cli

    run = tmp_path / "frozen"
    run_cli(str(QUICKSTART), *TINY, "frozen=true", "tasks.quora.head=cross", "tasks.sts.extra_layers=1", f"out={run}")
    summary = json.loads((run / "summary.json").read_text())
    assert main(["evaluate", str(run)]) == 0
    shown = capsys.readouterr().out
    for metric in ("sst/acc", "quora/acc", "sts/pearson"):
        assert f"{summary['dev'][metric]:.4f}" in shown, metric


def test_handout_preset_is_the_handouts_settings_and_what_is_set_wins():
    """`preset: handout` = reports 000 and 004, section 5.3: 10 epochs, batch size 8, hidden dropout 0.3, lr 1e-3
    frozen ("pretrain") and 1e-5 fine-tuned, for both tasks; a flag or key given beside it wins."""
    for task in ("sst", "cfimdb"):
        for mode, lr in (("frozen", 1e-3), ("finetune", 1e-5)):
            c = ClassifyConfig(task=task, mode=mode, preset="handout").resolved()
            assert (c.epochs, c.batch_size, c.dropout, c.lr) == (10, 8, 0.3, lr), (task, mode)
            t = c.train_config()
            assert (t.epochs, t.lr, t.tasks[task].batch_size, t.tasks[task].dropout) == (10, lr, 8, 0.3)
            assert t.frozen == (mode == "frozen")
    # without it, the defaults for the small checkpoint
    c = ClassifyConfig(task="sst", mode="finetune").resolved()
    assert (c.epochs, c.batch_size, c.dropout, c.lr) == (4, 32, 0.3, 5e-5)
    # the command line: the flag, then explicit flags and key=value overrides over it
    args = build_parser().parse_args(["classify", "--task", "cfimdb", "--mode", "finetune", "--preset", "handout"])
    c = config_from_args(ClassifyConfig, args, None).resolved()
    assert (c.preset, c.epochs, c.batch_size, c.dropout, c.lr) == ("handout", 10, 8, 0.3, 1e-5)
    args = build_parser().parse_args(
        ["classify", "--preset", "handout", "--epochs", "2", "--batch-size", "32", "dropout=0.1", "lr=2e-5"]
    )
    c = config_from_args(ClassifyConfig, args, None).resolved()
    assert (c.epochs, c.batch_size, c.dropout, c.lr) == (2, 32, 0.1, 2e-5)
    with pytest.raises(MinbertError, match="preset"):
        config_from_args(ClassifyConfig, build_parser().parse_args(["classify", "preset=bert"]), None)


def test_handout_preset_run_saves_what_ran(tmp_path):
    classify(small(tmp_path, mode="frozen", preset="handout", epochs=1, batch_size=0))
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "batch_size: 8" in saved and "lr: 0.001" in saved and "dropout: 0.3" in saved
