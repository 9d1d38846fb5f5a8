"""Multitask training on a few real rows of SST, Quora and STS with the embedded checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from minbert.cli import main
from minbert.config import load_config
from minbert.data import Tokenizer, read_predictions
from minbert.multitask.config import TaskConfig, TrainConfig
from minbert.multitask.data import encode_task, make_batch
from minbert.multitask.run import build, load_data
from minbert.multitask.runner import Runner
from minbert.multitask.state import load_snapshot, save_snapshot, snapshot_folder
from minbert.tasks import TASKS
from tests.helpers import QUICKSTART, RESUMABLE, TINY, final_weights, run_cli


def test_run_prints_results_and_writes_files(tiny_run):
    run, out = tiny_run
    assert "| dev (best epoch" in out and "sst/acc" in out and "sts/pearson" in out and "overall" in out
    summary = json.loads((run / "summary.json").read_text())
    dev = summary["dev"]
    assert dev["overall"] == pytest.approx((dev["sst/acc"] + dev["quora/acc"] + (dev["sts/pearson"] + 1) / 2) / 3)
    for name in (
        "sst-dev-output.csv",
        "para-dev-output.csv",
        "sts-dev-output.csv",
        "sst-test-output.csv",
        "sts-test-output.csv",
    ):
        assert (run / "predictions" / name).is_file()
    assert len(read_predictions(run / "predictions" / "sts-test-output.csv")) == 48  # eval_limit
    assert (run / "predictions" / "para-dev-output.csv").read_text().startswith("id \t Predicted_Is_Paraphrase \n")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "dev/overall" in r] == [1, 2]
    assert sum("train/loss/quora" in r and "dev/overall" not in r for r in records) == 12


def test_kill_and_resume_is_bit_identical(tiny_run, tmp_path):
    run, _ = tiny_run
    killed = tmp_path / "killed"
    proc = run_cli(str(QUICKSTART), *TINY, *RESUMABLE, f"out={killed}", wait=False)
    deadline = time.time() + 300
    while not (killed / "last.json").is_file():  # the first mid-epoch checkpoint (step 2 of 6)
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((snapshot_folder(killed, "last") / "state.json").read_text())
    assert state["epoch"] == 1 and 0 < state["step_in_epoch"] < 6, "the kill must land mid-epoch"
    assert not (killed / "summary.json").exists()
    run_cli("--resume", str(killed))
    a, b = final_weights(run), final_weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (
        json.loads((run / "summary.json").read_text())["dev"]
        == json.loads((killed / "summary.json").read_text())["dev"]
    )
    assert (run / "metrics.jsonl").read_text().count("\n") == (killed / "metrics.jsonl").read_text().count("\n")
    assert (run / "predictions" / "sts-test-output.csv").read_text() == (
        killed / "predictions" / "sts-test-output.csv"
    ).read_text()


def test_evaluate_predict_and_plot_reload_a_run(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    dev = json.loads((run / "summary.json").read_text())["dev"]
    assert f"{dev['sst/acc']:.4f}" in out and f"{dev['overall']:.4f}" in out
    assert main(["predict", str(run), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "sst-test-output.csv").read_text() == (
        run / "predictions" / "sst-test-output.csv"
    ).read_text()
    assert main(["plot", str(run)]) == 0
    for png in ("loss_per_task.png", "dev_metrics.png"):
        assert (run / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    """A real SIGKILL at an arbitrary moment of a save loop: the pointer always names a complete, consistent save."""
    script = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from minbert.multitask.state import save_snapshot\n"
        "m = torch.nn.Linear(2000, 2000)\n"
        "for step in range(1, 10**6):\n"
        "    torch.nn.init.constant_(m.weight, float(step))\n"
        "    save_snapshot(Path(sys.argv[1]), 'last', step, m, state={'step': step})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    while not (tmp_path / "last.json").is_file():
        time.sleep(0.01)
    time.sleep(1.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    m = torch.nn.Linear(2000, 2000)
    state = load_snapshot(tmp_path, "last", m)
    assert state["step"] >= 1 and torch.all(m.weight == float(state["step"]))


def test_interrupted_save_does_not_move_the_pointer(tmp_path, monkeypatch):
    m = torch.nn.Linear(3, 3)
    torch.nn.init.constant_(m.weight, 1.0)
    save_snapshot(tmp_path, "last", 1, m, state={"step": 1})
    torch.nn.init.constant_(m.weight, 2.0)

    def crash(*a, **k):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr("minbert.multitask.state.save_tensors", crash)
    with pytest.raises(KeyboardInterrupt):
        save_snapshot(tmp_path, "last", 2, m, state={"step": 2})
    fresh = torch.nn.Linear(3, 3)
    assert load_snapshot(tmp_path, "last", fresh)["step"] == 1 and torch.all(fresh.weight == 1.0)


def test_restored_optimizer_moments_live_on_the_parameters_device():
    # a checkpoint's tensors load on the CPU; on a GPU the moments must follow the weights there (the fused kernel
    # refuses a mix). The meta device stands in for the GPU here
    from minbert.multitask.state import optimizer_state, restore_optimizer
    from minbert.optim import AdamW

    m = torch.nn.Linear(3, 3)
    opt = AdamW(m.parameters(), lr=0.1)
    m(torch.randn(2, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_state(m, opt)
    other = torch.nn.Linear(3, 3, device="meta")
    opt2 = AdamW(other.parameters(), lr=0.1)
    restore_optimizer(other, opt2, tensors, meta)
    moments = [v for s in opt2.state.values() for v in s.values() if torch.is_tensor(v)]
    assert len(moments) == 4 and all(v.device.type == "meta" for v in moments)
    assert opt2.state[other.weight]["step"] == 1


def test_checkpoints_keep_the_gpus_random_stream(tmp_path, monkeypatch):
    # dropout on a GPU draws from the CUDA generator: a resumed run continues it (simulated where there is no GPU)
    from minbert.optim import AdamW

    stream, restored = torch.arange(16, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a: stream.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda t, *a: restored.append(t))
    m = torch.nn.Linear(3, 3)
    opt = AdamW(m.parameters(), lr=0.1)
    m(torch.randn(2, 3)).sum().backward()
    opt.step()
    save_snapshot(tmp_path, "last", 1, m, opt, state={"step": 1})
    load_snapshot(tmp_path, "last", torch.nn.Linear(3, 3), AdamW(m.parameters(), lr=0.1))
    assert len(restored) == 1 and torch.equal(restored[0], stream)


def test_cross_encoder_batches_carry_token_types(ckpt):
    tok = Tokenizer.from_pretrained(ckpt)
    from minbert.data import Example

    data = encode_task(TASKS["quora"], [Example("x", ("a cat", "the dog ran"), 1)], tok, TaskConfig(head="cross"))
    b = make_batch(data, [0], tok.pad_id)
    assert b.types.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]] and not b.pair


def test_evaluation_encodes_each_distinct_sentence_once(monkeypatch):
    cfg = load_config(TrainConfig, QUICKSTART, ["precision=fp32", "tasks.sts.eval_limit=200"])
    model, tok = build(cfg, torch.device("cpu"))
    data = load_data(cfg, tok, ("dev",))["dev"]["sts"]
    rows = []
    forward = model.bert.encoder.forward
    monkeypatch.setattr(
        model.bert.encoder, "forward", lambda x, *a, **k: rows.append(x.shape[0]) or forward(x, *a, **k)
    )
    Runner(model, tok.pad_id, "cpu", "fp32").predict("sts", data)
    distinct = len({s for e in data.examples for s in e.texts})
    assert sum(rows) == distinct < 2 * len(data.examples)


def test_ensemble_of_one_run_twice_equals_the_run(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    assert main(["ensemble", str(run), str(run), "--out", str(tmp_path / "ens")]) == 0
    ens = json.loads((tmp_path / "ens" / "summary.json").read_text())
    single = json.loads((run / "summary.json").read_text())["dev"]
    assert ens["dev"] == pytest.approx(single)
    assert (tmp_path / "ens" / "predictions" / "sst-dev-output.csv").read_text() == (
        run / "predictions" / "sst-dev-output.csv"
    ).read_text()
    assert main(["ensemble", str(run), "--out", str(tmp_path / "none"), "--min", "sst=1", "quora=1", "sts=1"]) == 2
    assert "no run passed the thresholds" in capsys.readouterr().err


def test_ensemble_averages_probabilities_not_votes_or_logits():
    """Three members that disagree: the mean of the class probabilities decides (example 0: two members lean to
    class 0, one is sure of 1 - a vote says 0, the mean says 1; example 1: averaging log-probabilities would say 1,
    the mean says 0); Quora averages P(1), STS the scores."""
    from types import SimpleNamespace

    from minbert.ensemble import _average

    def sst(rows):
        return torch.tensor([r + [0.0] * 3 for r in rows])  # (2 examples, 5 classes)

    members = [sst([[0.6, 0.4], [0.9, 0.1]]), sst([[0.6, 0.4], [0.9, 0.1]]), sst([[0.05, 0.95], [0.001, 0.999]])]
    quora = [torch.tensor([0.9, 0.2]), torch.tensor([0.4, 0.2]), torch.tensor([0.3, 0.9])]  # means 0.53, 0.43
    sts = [torch.tensor([1.0, 4.0]), torch.tensor([2.0, 5.0]), torch.tensor([4.5, 0.0])]
    soft = {"dev": {"sst": members, "quora": quora, "sts": sts}, "test": {}}
    labels = {"sst": torch.tensor([1, 0]), "quora": torch.tensor([1, 0]), "sts": torch.tensor([2.5, 3.0])}
    data_of = {"dev": {t: SimpleNamespace(labels=y) for t, y in labels.items()}}
    metrics, preds = _average(soft, data_of, TASKS)
    assert list(preds["dev"]["sst"]) == [1, 0]
    assert metrics["sst/acc"] == 1.0 and metrics["quora/acc"] == 1.0
    assert list(preds["dev"]["quora"]) == [1, 0]
    assert torch.allclose(torch.as_tensor(preds["dev"]["sts"], dtype=torch.float32), torch.tensor([2.5, 3.0]))
    votes = torch.stack([m.argmax(-1) for m in members]).mode(0).values  # what a vote would give
    logits = torch.stack([m.clamp_min(1e-9).log() for m in members]).mean(0).argmax(-1)  # averaged log-probs
    assert votes.tolist() != [1, 0] and logits.tolist() != [1, 0]


def test_ensemble_thresholds_keep_the_tasks_a_run_passes(tiny_run, tmp_path, capsys):
    # report 001's per-task thresholds: a run that passes SST and STS but not Quora serves those two tasks only
    run, _ = tiny_run
    single = json.loads((run / "summary.json").read_text())["dev"]
    assert main(["ensemble", str(run), str(run), "--out", str(tmp_path / "ens"), "--min", "sst=0.0", "quora=0.99"]) == 0
    ens = json.loads((tmp_path / "ens" / "summary.json").read_text())
    assert set(ens["members"]) == {"sst", "sts"} and "quora/acc" not in ens["dev"]
    assert ens["dev"]["sst/acc"] == pytest.approx(single["sst/acc"]) and ens["dev"]["sts/pearson"] == pytest.approx(
        single["sts/pearson"]
    )
    assert not (tmp_path / "ens" / "predictions" / "para-dev-output.csv").exists()
    assert main(["ensemble", str(run), "--out", str(tmp_path / "bad"), "--min", "sentiment=0.5"]) == 2
    assert "sentiment: unknown task" in capsys.readouterr().err


def test_analyze_and_compare(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    assert main(["analyze", str(run), "--perplexity", "5"]) == 0
    m = json.loads((run / "plots" / "sst_confusion.json").read_text())["rows_true_cols_predicted"]
    assert all(abs(sum(row) - 1) < 1e-3 or sum(row) == 0 for row in m)
    for png in ("sst_confusion.png", "sst_tsne.png"):
        assert (run / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["compare", str(run), "--chart", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    dev = json.loads((run / "summary.json").read_text())["dev"]
    assert f"| {run.name} | {dev['sst/acc']:.4f} |" in out and (tmp_path / "c.png").is_file()


TECH = TINY + [
    "epochs=2",
    "steps_per_epoch=4",
    "combiner=gradvac",
    "combiner_args={per: layer}",
    "conflict_stats=true",
    "lr_schedule=plateau",
    "regularizers.bregman.mu=0.5",
    "regularizers.bregman.beta=0.5",
    "tasks.sts.loss=cosine_embedding",
    "tasks.sts.loss_args.threshold=3.0",
    "tasks.sts.margin_step=0.1",
]


def last_extra(run, prefix: str) -> dict:
    """The tensors under `prefix` kept beside the optimizer state in a run's last checkpoint."""
    from safetensors.torch import load_file

    folder = sorted((run / "checkpoints").glob("last-*"))[-1]
    return {k: v for k, v in load_file(folder / "optimizer.safetensors").items() if k.startswith(prefix)}


@pytest.mark.parametrize("combiner,weighting", [("gradvac", "dwa"), ("nash_mtl", "uw")])  # and an EMA
def test_interrupted_run_with_stateful_techniques_resumes_exactly(
    tmp_path, monkeypatch, tiny_encoder, combiner, weighting
):
    """GradVac's EMA targets, Nash-MTL's last weights (its solver's warm start), UW's learned scales and their Adam,
    DWA's loss history, the plateau schedule, Bregman's teacher and the dynamic margin all carry across a resume: the
    resumed run's weights are bit-equal."""
    import minbert.multitask.train as tr

    tech = TECH + [f"checkpoint={tiny_encoder}", f"weighting={weighting}", "ema_decay=0.9"]  # all kept on resume
    if combiner != "gradvac":
        tech = [t for t in tech if not t.startswith("combiner")] + [f"combiner={combiner}"]
    full = tr.train(load_config(TrainConfig, QUICKSTART, tech + [f"out={tmp_path / 'a'}"]))
    real, calls = tr.save_snapshot, []

    def dying(run, kind, *a, **k):
        real(run, kind, *a, **k)
        calls.append(kind)
        if calls.count("last") == 3:  # after step 2 of epoch 1, epoch 1's end, and step 2 of epoch 2
            raise KeyboardInterrupt

    monkeypatch.setattr(tr, "save_snapshot", dying)
    with pytest.raises(KeyboardInterrupt):
        tr.train(load_config(TrainConfig, QUICKSTART, tech + RESUMABLE + [f"out={tmp_path / 'b'}"]))
    monkeypatch.setattr(tr, "save_snapshot", real)
    resumed = tr.train(tr.resume_config(tmp_path / "b", []), resume=tmp_path / "b")
    assert resumed["dev"] == full["dev"]
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = (last_extra(tmp_path / r, "extra/ema/") for r in ("a", "b"))  # the averaged weights too
    assert ea and ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    last = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()][-1]
    assert "conflict/sst-quora/mean_cos" in last and "margin/sts" in last
    assert ("gradvac/rows" in last) == (combiner == "gradvac")


def test_per_task_gradient_path_sums_like_plain_training(tmp_path):
    import minbert.multitask.train as tr

    base = TINY + [
        "epochs=1",
        "steps_per_epoch=3",
        "checkpoint_every=0",
        "fused=false",
    ]  # per-task passes in both: same dropout draws
    tr.train(load_config(TrainConfig, QUICKSTART, base + [f"out={tmp_path / 'plain'}"]))
    tr.train(load_config(TrainConfig, QUICKSTART, base + ["conflict_stats=true", f"out={tmp_path / 'rows'}"]))
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "rows")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
