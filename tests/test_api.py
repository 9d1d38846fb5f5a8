"""Use what you trained: `minbert.load(RUN)` predicts what the run's own evaluation predicted, from plain text, and
`minbert predict RUN --task T --input FILE|-` prints one prediction per line."""

import json
import subprocess
import sys

import pytest
import torch

import minbert
from minbert.data import DATASETS, data_dir, load_split, read_predictions
from tests.helpers import QUICKSTART, TINY


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run[0]


def dev_rows(task: str, n: int = 48):
    return load_split(DATASETS[task], "dev", data_dir(), False)[:n]


@pytest.mark.slow
def test_load_predicts_what_the_runs_own_evaluation_predicted(run):
    m = minbert.load(run)
    assert m.tasks == ["sst", "quora", "sts"]
    sst, quora, sts = dev_rows("sst"), dev_rows("quora"), dev_rows("sts")
    got = m.predict("sst", [e.texts[0] for e in sst])
    want = read_predictions(run / "predictions" / "sst-dev-output.csv")
    assert [p["label"] for p in got] == [int(want[e.id]) for e in sst]
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-4 and len(p["probabilities"]) == 5 for p in got)
    got = m.predict("quora", [e.texts for e in quora])
    want = read_predictions(run / "predictions" / "para-dev-output.csv")
    assert [p["label"] for p in got] == [int(want[e.id]) for e in quora] and 0 <= got[0]["probability"] <= 1
    got = m.predict("sts", [e.texts for e in sts])
    want = read_predictions(run / "predictions" / "sts-dev-output.csv")
    assert all(abs(p["score"] - float(want[e.id])) < 1e-3 for p, e in zip(got, sts))
    emb = m.embed(["a gorgeous, witty film", "a tedious mess"])
    assert emb.shape == (2, 384) and torch.isfinite(emb).all()


@pytest.mark.slow
def test_predict_reads_stdin_and_prints_one_line_per_input(run):
    cmd = [sys.executable, "-m", "minbert", "predict", str(run), "--task", "sst", "--input", "-"]
    done = subprocess.run(cmd, input="a gorgeous, witty film\na tedious mess\n", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert [x["input"] for x in lines] == ["a gorgeous, witty film", "a tedious mess"]
    assert all(0 <= x["label"] <= 4 for x in lines)
    pairs = '{"sentence1": "a man plays guitar", "sentence2": "a person plays a guitar"}\n'
    cmd = [sys.executable, "-m", "minbert", "predict", str(run), "--task", "sts", "--input", "-", "--format", "csv"]
    done = subprocess.run(cmd, input=pairs, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header == "sentence1,sentence2,score" and row.startswith("a man plays guitar,a person plays a guitar,")
    done = subprocess.run(cmd[:-2], input="no tab here\n", capture_output=True, text=True)
    assert done.returncode == 2 and "stdin:1: sts reads pairs: two sentences separated by one tab" in done.stderr
    assert "Traceback" not in done.stderr


def test_inputs_are_checked_before_any_model_work(tmp_path, capsys):
    from minbert.api import read_inputs
    from minbert.cli import main
    from minbert.errors import MinbertError

    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n\n{"txt": "no"}\n')
    with pytest.raises(MinbertError, match=r"in.jsonl:3: a JSON line for sst needs the key\(s\) text or sentence"):
        read_inputs(str(tmp_path / "in.jsonl"), False, "sst")
    assert main(["predict", str(tmp_path), "--input", "-"]) == 2
    assert "predict --input needs --task" in capsys.readouterr().err


@pytest.mark.slow
def test_early_stopping_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "es"
    args = ["epochs=4", "lr=0", "early_stopping.patience=1", "loggers=[tensorboard]", "checkpoint_every=0"]
    args.append(f"out={run}")
    subprocess.run(
        [sys.executable, "-m", "minbert", "train", str(QUICKSTART), *TINY, *args], check=True, capture_output=True
    )
    summary = json.loads((run / "summary.json").read_text())
    # lr 0: no epoch beats the first, so the run stops after the second of four
    assert summary["steps"] == 12 and summary["best_epoch"] == 1
    assert summary["stopped"].startswith("early stopping: no better overall than epoch 1's")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("dev/overall")] == [6, 12]
    assert len(events.Scalars("train/loss/sst")) == 12  # log_every 1


def test_a_resumed_run_replaces_its_replayed_tensorboard_events(tmp_path):
    """As metrics.jsonl drops the records after the checkpoint a run resumes from, TensorBoard hides those events:
    each step shows the resumed run's value once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minbert.runs import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl", ["tensorboard"])
    for step in range(1, 6):
        log.write({"step": step, "train/loss/sst": float(step)})
    log.close()
    resumed = MetricsLog(tmp_path / "metrics.jsonl", ["tensorboard"])
    resumed.truncate_after(3)  # the checkpoint was at step 3; steps 4 and 5 run again
    for step in (4, 5):
        resumed.write({"step": step, "train/loss/sst": 10.0 * step})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss/sst")] == [(1, 1), (2, 2), (3, 3), (4, 40), (5, 50)]
    assert [r["train/loss/sst"] for r in resumed.read()] == [1, 2, 3, 40, 50]


def test_early_stopping_metric_and_loggers_are_checked(capsys, tmp_path):
    from minbert.cli import main

    assert main(["train", str(QUICKSTART), "early_stopping.metric=sts/acc", f"out={tmp_path / 'x'}"]) == 2
    assert (
        "early_stopping.metric: 'sts/acc' is not a dev metric of these tasks; valid: overall, sst/acc"
        in capsys.readouterr().err
    )
    assert main(["train", str(QUICKSTART), "loggers=[mlflow]", f"out={tmp_path / 'x'}"]) == 2
    assert "loggers: 'mlflow' unknown; valid: tensorboard, wandb" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_and_bf16_inference_agree_with_fp32_within_stated_tolerances(run, capsys):
    """Inference precisions against fp32 on the same checkpoint and 48 dev rows, within the tolerances docs/SPEED.md
    states: int8 class probabilities 0.02 off on average (0.1 at worst), STS scores 0.25 (0.75) of 5, embeddings at
    cosine 0.92 on average (0.85 at worst); bf16 ten times closer. The int8 model is a copy: the fp32 one stays."""
    from minbert.cli import main
    from minbert.errors import MinbertError
    from minbert.multitask.runner import int8

    sst, sts = [e.texts[0] for e in dev_rows("sst")], [e.texts for e in dev_rows("sts")]
    ref = minbert.load(run, precision="fp32")
    before = {k: v.clone() for k, v in ref.run.model.state_dict().items()}
    for precision, k in (("int8", 1.0), ("bf16", 0.1)):
        m = minbert.load(run, precision=precision)
        d = (m.soft("sst", sst) - ref.soft("sst", sst)).abs()
        assert d.mean() <= 0.02 * k and d.max() <= 0.1 * k, (precision, d.mean(), d.max())
        s = (m.soft("sts", sts) - ref.soft("sts", sts)).abs()
        assert s.mean() <= 0.25 * k and s.max() <= 0.75 * k, (precision, s.mean(), s.max())
        cos = torch.nn.functional.cosine_similarity(m.embed(sst), ref.embed(sst), dim=-1)
        assert 1 - cos.mean() <= 0.08 * k and 1 - cos.min() <= 0.15 * k, (precision, cos.mean(), cos.min())
    after = ref.run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert main(["evaluate", str(run), "--precision", "int8"]) == 0
    assert "sst/acc" in capsys.readouterr().out
    with pytest.raises(MinbertError, match="int8 quantization runs on CPU"):
        int8(ref.run.model, torch.device("cuda"))


def test_int8_without_torch_quantization_is_one_line(run, capsys, monkeypatch):
    """PyTorch announces torch.ao.quantization's removal: where quantize_dynamic is gone, --precision int8 says so in
    one line (exit 2) and names the ways left, instead of an AttributeError's traceback; where it is there, its
    deprecation notices stay ours, not printed at every int8 load."""
    import warnings

    from minbert.cli import main
    from minbert.multitask.runner import int8

    model = minbert.load(run, precision="fp32").run.model
    with warnings.catch_warnings(record=True) as seen:  # while it is there, its deprecation notices are not shown
        warnings.simplefilter("always")
        int8(model, torch.device("cpu"))
    assert not [w for w in seen if "deprecated" in str(w.message)], [str(w.message)[:80] for w in seen]
    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    assert main(["evaluate", str(run), "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no torch.ao.quantization.quantize_dynamic" in err[0], err
    assert "--format onnx --int8" in err[0]
