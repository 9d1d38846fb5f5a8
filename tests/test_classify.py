"""The single-task classifier end to end, on a few real SST/CFIMDB rows and the embedded checkpoint."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from minbert.classify import ClassifyConfig, classify
from minbert.cli import main
from minbert.data import read_predictions


def small(tmp_path, **kw):
    base = dict(train_limit=64, batch_size=16, max_length=32, epochs=2, seed=3, out=str(tmp_path / "run"))
    return ClassifyConfig(**{**base, **kw})


def test_frozen_mode_trains_only_the_head(tmp_path, ckpt):
    before = load_file(str(ckpt / "model.safetensors"))
    summary = classify(small(tmp_path, mode="frozen"))
    after = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    for k, v in before.items():
        if k != "embeddings.position_ids":
            assert torch.equal(after["bert." + k], v), f"frozen encoder changed {k}"
    head = after["classifier.weight"]
    assert head.shape == (5, 384) and head.abs().sum() > 0
    assert 0.0 <= summary["dev/acc"] <= 1.0


def test_finetune_run_directory(tmp_path, ckpt):
    summary = classify(small(tmp_path, mode="finetune", max_steps=3, epochs=1))
    run = tmp_path / "run"
    assert summary["steps"] == 3
    assert (run / "config.yaml").read_text().count("lr: 5.0e-05") == 1  # the resolved default is saved
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["epoch"] == 1 and "dev/acc" in records[0]
    dev = read_predictions(run / "predictions" / "finetune-sst-dev-out.csv")
    test = read_predictions(run / "predictions" / "finetune-sst-test-out.csv")
    assert len(dev) == 1101 and len(test) == 2210 and set(dev.values()) <= set("01234")
    # dev accuracy recomputed from the prediction file equals what the run reported
    from minbert.data import DATASETS, data_dir, load_split

    ex = load_split(DATASETS["sst"], "dev", data_dir())
    acc = sum(int(dev[e.id]) == e.label for e in ex) / len(ex)
    assert abs(acc - summary["dev/acc"]) < 1e-6
    best = load_file(str(run / "best" / "model.safetensors"))
    orig = load_file(str(ckpt / "model.safetensors"))
    assert not torch.equal(
        best["bert.encoder.layer.0.attention.self.query.weight"], orig["encoder.layer.0.attention.self.query.weight"]
    )


def test_saved_classifier_dir_is_a_loadable_bert_checkpoint(tmp_path):
    from minbert.model import BertModel

    classify(small(tmp_path, mode="frozen", epochs=1))
    model = BertModel.from_pretrained(tmp_path / "run" / "best")  # bert.* keys load; the head is left over
    assert model.config.hidden_size == 384


def test_cfimdb_frozen(tmp_path):
    summary = classify(small(tmp_path, task="cfimdb", mode="frozen", max_length=64))
    assert (tmp_path / "run" / "predictions" / "frozen-cfimdb-test-out.csv").is_file()
    assert summary["task"] == "cfimdb"


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
    assert out.returncode == 0 and "--mode {frozen,finetune}" in out.stdout
