"""What the study needs (issue 6): duplicate texts out of in-batch negatives, optimizer groups, regularizer terms in
metrics.jsonl, the time budget, and `minbert sweep`."""

import dataclasses
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml

from minbert.cli import main
from minbert.data import Example
from minbert.losses import LOSSES
from minbert.model import BertModel
from minbert.model.multitask import MultitaskModel
from minbert.model.outputs import HeadOutput
from minbert.multitask.config import TaskConfig
from minbert.multitask.data import TaskData, make_batch
from minbert.sweep import load_sweep, rows
from tests.helpers import QUICKSTART, TINY, run_cli
from tests.helpers import TINY_BERT as HELPERS_BERT

TINY_BERT = dataclasses.replace(HELPERS_BERT, num_hidden_layers=3)


def test_batches_carry_sentence_keys_equal_for_equal_texts():
    ex = [Example("a", ("how do i x", "how can i x"), 1.0), Example("b", ("how do i x", "what is y"), 0.0)]
    data = TaskData(ex, torch.tensor([1.0, 0.0]), [[2, 5, 3], [2, 6, 3], [2, 7, 3]], [(0, 1), (0, 2)])
    b = make_batch(data, [0, 1], 0)
    assert b.keys.tolist() == [0, 0, 1, 2]  # first sentences, then second ones: both pairs share their question


def test_mnrl_masks_repeated_texts_out_of_the_negatives():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    labels = torch.ones(3)
    s = 2.0
    cos = [[1.0, 1 / math.sqrt(2), 0.0], [0.0, 1 / math.sqrt(2), 1.0], [1 / math.sqrt(2), 1.0, 1 / math.sqrt(2)]]

    def expected(allowed):  # per row i: the columns left (its own and true negatives)
        rows_ = [
            -math.log(math.exp(s * cos[i][i]) / sum(math.exp(s * cos[i][j]) for j in allowed[i])) for i in (0, 1, 2)
        ]
        return sum(rows_) / 3

    # pairs 0 and 1 share their first question (key 1), as 10.5% of Quora's positive pairs do: v_1 is a paraphrase
    # of u_0 too, so neither pair is the other's negative (no-duplicates batching); pair 2 shares nothing
    keys = torch.tensor([1, 1, 3, 5, 6, 4])  # u keys, then v keys
    got = LOSSES["mnrl"](scale=s)(HeadOutput(u=u, v=v, keys=keys), labels)
    assert got.item() == pytest.approx(expected([[0, 2], [1, 2], [0, 1, 2]]), rel=1e-6)
    # a pair's second sentence is another's first (key 7), or both share their second: every pair shares a text
    # with another here, pair 1 with both
    keys = torch.tensor([1, 7, 3, 7, 4, 7])
    got = LOSSES["mnrl"](scale=s)(HeadOutput(u=u, v=v, keys=keys), labels)
    assert got.item() == pytest.approx(expected([[0], [1], [2]]), rel=1e-6)
    plain = LOSSES["mnrl"](scale=s)(HeadOutput(u=u, v=v), labels)
    assert plain.item() == pytest.approx(expected([[0, 1, 2]] * 3), rel=1e-6) and plain.item() != got.item()


def test_triplet_drops_a_negative_that_repeats_a_text():
    u = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    v = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    labels = torch.tensor([5.0, 2.5])
    keys = torch.tensor([0, 1, 2, 0])  # u keys, then v keys: v_1, pair 0's negative, is u_0's text, so no negative
    expected = (0.0 + 0.5 * max(0, 1 - math.sqrt(20) + 1)) / 2  # unmasked, pair 0 would add max(0, 5 - sqrt(2) + 1)
    assert LOSSES["triplet"](margin=1.0)(HeadOutput(u=u, v=v, keys=keys), labels).item() == pytest.approx(expected)


def test_sentiment_clustering_pairs_two_different_texts_of_a_class():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 3, 0, 3])
    keys = torch.tensor([5, 5, 6, 8, 9])  # rows 0 and 1 are one sentence twice
    a, b = F.normalize(emb[[0, 2]], dim=-1), F.normalize(emb[[3, 4]], dim=-1)  # row 3 is class 0's second text
    expected = F.cross_entropy(20.0 * a @ b.T, torch.arange(2))
    assert torch.allclose(LOSSES["mnrl_sentiment"]()(HeadOutput(emb=emb, keys=keys), labels), expected)


def test_param_groups_give_heads_and_layers_their_rates():
    torch.manual_seed(0)
    model = MultitaskModel(BertModel(TINY_BERT), {"sst": TaskConfig(head="linear", loss="ce")})
    groups = model.param_groups(1e-4, head_lr_mult=10, layer_lr_decay=0.5)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(rate) == sum(1 for p in model.parameters() if p.requires_grad) == sum(len(g["params"]) for g in groups)
    assert rate[id(model.heads["sst"].out.weight)] == pytest.approx(1e-3)
    assert rate[id(model.bert.pooler.dense.weight)] == pytest.approx(1e-4)
    for i, layer in enumerate(model.bert.encoder.layer):  # L = 3: layer i at 0.5^(3 - i)
        assert rate[id(layer.output.dense.weight)] == pytest.approx(1e-4 * 0.5 ** (3 - i))
    assert rate[id(model.bert.embeddings.word_embeddings.weight)] == pytest.approx(1e-4 * 0.5**3)
    assert len(model.param_groups(1e-4)) == 1  # no multipliers: one group, the plain optimizer


@pytest.mark.slow
def test_smart_term_is_logged_and_the_time_budget_stops_training(tmp_path):
    # issue 6's check: with the encoder's dropout off, the SMART term is still clearly non-zero
    run = tmp_path / "smart"
    run_cli(
        str(QUICKSTART),
        *TINY,
        "encoder_dropout=0",
        "regularizers.smart.weight=1",
        "log_every=1",
        "max_minutes=0.0001",
        f"out={run}",
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    smart = [r["train/reg/smart"] for r in records if "train/reg/smart" in r]
    assert smart and min(smart) > 1e-6
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 1 and "max_minutes" in summary["stopped"]  # one step, then evaluation and the end
    assert "dev/overall" in records[-1] and summary["dev"]["overall"] == records[-1]["dev/overall"]


@pytest.mark.slow
def test_sweep_runs_every_variant_and_seed_skips_finished_ones_and_averages(tmp_path, capsys, tiny_encoder):
    out = tmp_path / "sweep"
    spec = {
        "base": str(QUICKSTART),
        "overrides": TINY + ["epochs=1", "steps_per_epoch=2", f"checkpoint={tiny_encoder}"],
        "variants": {"plain": [], "heads-x10": ["head_lr_mult=10"]},
        "seeds": [1, 2],
        "out": str(out),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 0
    table = capsys.readouterr().out
    sweep = load_sweep(path)
    got = {r.name: r for r in rows(sweep)}
    assert got.keys() == {"plain", "heads-x10"} and all(r.n == 2 for r in got.values())
    for name, r in got.items():
        overall = [json.loads((out / name / f"seed{s}" / "summary.json").read_text())["dev"]["overall"] for s in (1, 2)]
        assert r.mean["overall"] == pytest.approx(sum(overall) / 2)
        assert r.std["overall"] == pytest.approx(abs(overall[0] - overall[1]) / math.sqrt(2))
        assert f"| {name} | 2 |" in table
    assert (out / "results.csv").is_file() and (out / "results.png").is_file() and (out / "results.md").is_file()
    spec2 = {**spec, "report": "second", "variants": {"plain": spec["variants"]["plain"]}}  # a sweep sharing the out
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(spec2))
    assert main(["sweep", str(tmp_path / "second.yaml"), "--report"]) == 0
    assert "heads-x10" not in (out / "second.md").read_text() and "heads-x10" in (out / "results.md").read_text()
    # a finished run is skipped; a deleted one runs again
    shutil.rmtree(out / "plain" / "seed2")
    before = (out / "plain" / "seed1" / "summary.json").stat().st_mtime_ns
    assert main(["sweep", str(path)]) == 0
    log = capsys.readouterr().out
    assert "plain seed 1: done" in log and "plain seed 2: new" in log
    assert (out / "plain" / "seed1" / "summary.json").stat().st_mtime_ns == before
    assert (out / "plain" / "seed2" / "summary.json").is_file()
    # a variant changed since its runs finished: refused, naming the run and the key, rather than reported as it
    spec["variants"]["heads-x10"] = ["head_lr_mult=3"]
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--report"]) == 2
    err = capsys.readouterr().err
    assert "heads-x10/seed1: trained with head_lr_mult=10.0, but variant heads-x10 now gives 3.0" in err


def test_sweep_record_keeps_finished_runs_and_restores_them_on_a_machine_without_them(tmp_path, capsys, tiny_encoder):
    out, record = tmp_path / "runs" / "sweep", tmp_path / "record"
    spec = {
        "base": str(QUICKSTART),
        "overrides": TINY + ["epochs=1", "steps_per_epoch=2", f"checkpoint={tiny_encoder}"],
        "variants": {"plain": []},
        "seeds": [1, 2],
        "out": str(out),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--record", str(record)]) == 0
    table = (out / "results.md").read_text()
    for seed in (1, 2):
        kept = record / "sweep" / "plain" / f"seed{seed}"
        assert sorted(p.name for p in kept.iterdir()) == ["config.yaml", "metrics.jsonl", "summary.json"]
        assert (kept / "summary.json").read_bytes() == (out / "plain" / f"seed{seed}" / "summary.json").read_bytes()
    shutil.rmtree(tmp_path / "runs")  # another machine: the record only
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run", "--record", str(record)]) == 0  # says so, restores nothing
    log = capsys.readouterr().out
    assert "plain seed 1: done (in the record)" in log and "plain seed 2: done (in the record)" in log
    assert not (out / "plain").exists()
    assert main(["sweep", str(path), "--record", str(record)]) == 0
    log = capsys.readouterr().out
    assert "2 finished runs restored" in log and "plain seed 1: done" in log and "plain seed 2: done" in log
    assert (out / "results.md").read_text() == table
    shutil.rmtree(tmp_path / "runs")  # the table alone, from the record
    assert main(["sweep", str(path), "--report", "--record", str(record)]) == 0
    assert (out / "results.md").read_text() == table
    # a record that is a file, and a record for a search: one line each
    (tmp_path / "file").write_text("x")
    assert main(["sweep", str(path), "--record", str(tmp_path / "file" / "r")]) == 2
    assert "is a file, not a folder; choose another --record folder" in capsys.readouterr().err
    search = {**spec, "search": {"trials": 1, "params": {"lr": {"low": 1e-5, "high": 1e-4}}}}
    del search["variants"]
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search))
    assert main(["sweep", str(tmp_path / "search.yaml"), "--record", str(record)]) == 2
    assert "a search's trials live in OUT/optuna.journal" in capsys.readouterr().err
    # a broken copy in the record: one line naming it, nothing restored
    shutil.rmtree(tmp_path / "runs")
    good = (record / "sweep" / "plain" / "seed2" / "summary.json").read_text()
    (record / "sweep" / "plain" / "seed2" / "summary.json").write_text("{")
    assert main(["sweep", str(path), "--report", "--record", str(record)]) == 2
    assert "record/sweep/plain/seed2/summary.json" in capsys.readouterr().err and not out.exists()
    (record / "sweep" / "plain" / "seed2" / "summary.json").write_text(good)
    # a record made with another setting is refused like a kept run, naming the key, and taken back out
    spec["variants"]["plain"] = ["head_lr_mult=3"]
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--record", str(record)]) == 2
    err = capsys.readouterr().err
    assert "plain/seed1: trained with head_lr_mult=" in err and f"restored from {record}: remove it there" in err
    assert not (out / "plain" / "seed1").exists()


def test_sweep_refuses_a_bad_variant_before_any_run(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump({"base": str(QUICKSTART), "variants": {"bad": ["lr_schedule=nope"]}, "out": str(tmp_path / "o")})
    )
    assert main(["sweep", str(path)]) == 2
    assert "variant bad: lr_schedule" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    path.write_text(yaml.safe_dump({"base": "missing.yaml"}))
    assert main(["sweep", str(path)]) == 2
    assert "missing.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_continues_where_it_stopped(tmp_path, capsys):
    pytest.importorskip("optuna")
    out = tmp_path / "search"
    spec = {
        "base": str(QUICKSTART),
        "overrides": TINY + ["epochs=1", "steps_per_epoch=2"],
        "seeds": [1],
        "out": str(out),
        "search": {
            "trials": 1,
            "metric": "overall",
            "params": {"lr": {"low": 1e-5, "high": 1e-4, "log": True}, "head_lr_mult": {"choices": [1, 10]}},
        },
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 0
    text = capsys.readouterr().out
    assert "best trial: trial-000" in text and (out / "optuna.journal").is_file()
    runs = sorted(p.parents[1].name for p in out.glob("trial-*/seed1/summary.json"))
    assert runs == ["trial-000"]
    for r in runs:  # each trial's overrides are in its saved config
        cfg = yaml.safe_load((out / r / "seed1" / "config.yaml").read_text())
        assert 1e-5 <= cfg["lr"] <= 1e-4 and cfg["head_lr_mult"] in (1, 10)
    spec["search"]["trials"] = 2  # one more: the finished trial is not run again
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path)]) == 0
    assert sorted(p.parents[1].name for p in out.glob("trial-*/seed1/summary.json")) == ["trial-000", "trial-001"]
    assert "trial-000:" not in capsys.readouterr().out
