"""Data parallel training with torchrun (gloo on CPU) against one process with the same global batch, and
gradient accumulation against one big batch."""

import json
import shutil
import subprocess

import pytest
import torch

import minbert.multitask.train as tr
from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.state import snapshot_folder
from tests.test_multitask import QUICKSTART, TINY, final_weights

# no dropout anywhere: the runs must compute the same function; 3 steps of 8 examples per task
EXACT = TINY + ["epochs=1", "steps_per_epoch=3", "checkpoint_every=0", "encoder_dropout=0"] + [
    f"tasks.{t}.dropout=0" for t in ("sst", "quora", "sts")
]


def files(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def assert_same_weights(a, b, tol=1e-5):
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= tol, worst


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
@pytest.mark.parametrize("extra", [[], ["combiner=pcgrad"]], ids=["sum-fused", "pcgrad"])
def test_two_gloo_processes_match_one_process_and_only_rank_0_writes(tmp_path, extra):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    tr.train(load_config(TrainConfig, QUICKSTART, EXACT + extra + [f"out={single}"]))
    work = tmp_path / "cwd"
    work.mkdir()
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "minbert", "train", str(QUICKSTART), *EXACT, *extra, f"out={ddp}"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_same_weights(single, ddp)
    # rank 1 wrote nothing: the same files as one process, metrics lines not doubled, nothing beside the run
    assert files(ddp) == files(single)
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == len((single / "metrics.jsonl").read_text().splitlines())
    assert list(work.iterdir()) == []
    assert proc.stdout.count("| dev (best epoch") == 1


def test_gradient_accumulation_matches_one_batch(tmp_path):
    tr.train(load_config(TrainConfig, QUICKSTART, EXACT + [f"out={tmp_path / 'one'}"]))
    tr.train(load_config(TrainConfig, QUICKSTART, EXACT + ["grad_accum=3", f"out={tmp_path / 'three'}"]))
    assert_same_weights(tmp_path / "one", tmp_path / "three")


def test_gradient_checkpointing_gives_the_same_gradients_with_dropout():
    from minbert.model import BertModel, default_checkpoint_dir

    torch.manual_seed(0)
    model = BertModel.from_pretrained(default_checkpoint_dir()).train()  # dropout on: recomputation must redraw the same masks
    ids = torch.randint(1000, 5000, (4, 12))
    grads = []
    for ckpt in (False, True):
        model.gradient_checkpointing = ckpt
        model.zero_grad()
        torch.manual_seed(1)
        model(ids).last_hidden_state.pow(2).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_fp16_with_gradient_scaler_trains(tmp_path):
    run = tmp_path / "fp16"
    tr.train(load_config(TrainConfig, QUICKSTART, TINY + ["epochs=1", "steps_per_epoch=3", "precision=fp16", "combiner=pcgrad", f"out={run}"]))
    w = final_weights(run)
    assert all(torch.isfinite(t).all() and t.dtype == torch.float32 for t in w.values())  # fp32 master weights
    state = json.loads((snapshot_folder(run, "last") / "state.json").read_text())
    assert state["techniques"]["scaler"]["scale"] > 0  # the loss scale travels with checkpoints
