"""Data parallel training with torchrun (gloo on CPU) against one process with the same global batch, and
gradient accumulation against one big batch."""

import contextlib
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

import minbert.multitask.train as tr
from minbert.config import load_config
from minbert.multitask.config import TrainConfig
from minbert.multitask.state import snapshot_folder
from minbert.runs import load_tensors
from tests.helpers import QUICKSTART, TINY, final_weights

# no dropout anywhere: the runs must compute the same function; 3 steps of 8 examples per task
EXACT = (
    TINY
    + ["epochs=1", "steps_per_epoch=3", "checkpoint_every=0", "encoder_dropout=0"]
    + [f"tasks.{t}.dropout=0" for t in ("sst", "quora", "sts")]
)


def files(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def assert_same_weights(a, b, tol=1e-5):
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= tol, worst


AGGREGATORS = ["pcgrad", "gradvac", "upgrad", "mgda", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl"]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
@pytest.mark.parametrize(
    "extra",
    [[], *([f"combiner={c}"] for c in AGGREGATORS), ["weighting=famo"], ["weighting=uw", "combiner=pcgrad"]],
    ids=["sum-fused", *AGGREGATORS, "famo", "uw-pcgrad"],
)
def test_two_gloo_processes_match_one_process_and_only_rank_0_writes(tmp_path, extra, tiny_encoder):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    extra = [*extra, f"checkpoint={tiny_encoder}"]  # the mechanics of data parallelism, not the MiniLM's numbers
    tr.train(load_config(TrainConfig, QUICKSTART, EXACT + extra + [f"out={single}"]))
    work = tmp_path / "cwd"
    work.mkdir()
    cmd = [
        "torchrun",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "minbert",
        "train",
        str(QUICKSTART),
        *EXACT,
        *extra,
        f"out={ddp}",
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_same_weights(single, ddp)
    # rank 1 wrote nothing: the same files as one process, metrics lines not doubled, nothing beside the run
    assert files(ddp) == files(single)
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == len(
        (single / "metrics.jsonl").read_text().splitlines()
    )
    assert list(work.iterdir()) == []
    assert proc.stdout.count("| dev (best epoch") == 1


@pytest.mark.parametrize("extra", [[], ["combiner=pcgrad", "conflict_stats=true"]], ids=["sum", "pcgrad"])
def test_gradient_accumulation_matches_one_batch(tmp_path, tiny_encoder, extra):
    # with a combiner, each task's row of G sums its micro-batches' gradients before the rows are combined
    exact = EXACT + [f"checkpoint={tiny_encoder}", *extra]
    tr.train(load_config(TrainConfig, QUICKSTART, exact + [f"out={tmp_path / 'one'}"]))
    tr.train(load_config(TrainConfig, QUICKSTART, exact + ["grad_accum=3", f"out={tmp_path / 'three'}"]))
    assert_same_weights(tmp_path / "one", tmp_path / "three")


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_killed_two_process_run_with_dropout_resumes_bit_identically(tmp_path, tiny_encoder):
    # dropout on: each rank draws its own masks, so each rank's RNG stream must come back from the checkpoint
    args = TINY + ["epochs=2", "steps_per_epoch=3", f"checkpoint={tiny_encoder}"]
    torchrun = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "minbert", "train"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.run(
        [*torchrun, str(QUICKSTART), *args, f"out={full}"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the checkpoint holds both ranks' generator states, and they differ
    opt = load_tensors(snapshot_folder(full, "last") / "optimizer.safetensors")
    assert not torch.equal(opt["extra/rng/rank0"], opt["extra/rng/rank1"])
    proc = subprocess.Popen(
        [*torchrun, str(QUICKSTART), *args, "checkpoint_every=1", f"out={killed}"],  # the kill lands after step 1
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (killed / "last.json").is_file():  # the first checkpoint, after step 1
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.01)
    tree = _descendants(proc.pid)  # torchrun may start its workers in process groups of their own
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the kill must land before the run ends"
    proc = subprocess.run([*torchrun, "--resume", str(killed)], capture_output=True, text=True, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if "minbert: error" in line]  # rank 0's line, if any
    assert proc.returncode == 0, "\n".join(errors) or proc.stderr[-3000:]
    a, b = final_weights(full), final_weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (each one's parent is the fourth field of its stat line)."""
    parent = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError):
                parent[int(p)] = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        top = todo.pop()
        kids = [c for c, q in parent.items() if q == top]
        out += kids
        todo += kids
    return out


def test_a_run_with_batches_by_tokens_trains_on_batches_within_the_budget(tmp_path, tiny_encoder, monkeypatch):
    from minbert.multitask import data

    seen = []
    next_batch = data.BatchStream.next

    def recorded(self):
        idx = next_batch(self)
        seen.append((self.tokens, self.inputs, max(self.lengths[i] for i in idx), len(idx)))
        return idx

    monkeypatch.setattr(data.BatchStream, "next", recorded)
    tokens = [f"tasks.{t}.batch_tokens=96" for t in ("sst", "quora", "sts")]
    tr.train(load_config(TrainConfig, QUICKSTART, EXACT + [f"checkpoint={tiny_encoder}", *tokens, f"out={tmp_path}"]))
    assert (tmp_path / "summary.json").is_file() and seen
    assert all(t == 96 and (n == 1 or n * inputs * longest <= 96) for t, inputs, longest, n in seen)
    assert {inputs for _, inputs, _, _ in seen} == {1, 2}  # SST's sentences, and the pairs' two inputs each
    assert len({n for *_, n in seen}) > 1  # as many examples as fit: the count varies with the lengths
