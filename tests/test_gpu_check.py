"""benchmarks/gpu_check.py, the prepared CUDA check (issue 24), as a CPU smoke test: every check runs on a tiny
random encoder and passes, and its table reaches $OUT, so the script cannot rot between GPU sessions."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_gpu_check_runs_on_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick", "--no-record"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    assert len(rows) == 13 and all("| ok |" in r for r in rows), table
    assert "bit-exact" in table and "backend gloo" in table


def test_prepare_writes_a_carry_under_the_device_limit(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--prepare", str(tmp_path / "carry")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    files = [p for p in (tmp_path / "carry").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 64 * 2**20
    from safetensors import safe_open

    with safe_open(str(tmp_path / "carry" / "checkpoint" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} <= {"F16", "I64"}
    names = {p.name for p in (tmp_path / "carry" / "data").iterdir()}
    assert {"ids-sst-train.csv", "quora-dev-from-dev.csv", "sts-dev.csv"} <= names


def test_host_syncs_finds_no_read_in_the_gpus_step_and_places_each_read_of_the_ordinary_one():
    def audit(*overrides):
        cmd = [sys.executable, str(ROOT / "benchmarks" / "host_syncs.py"), *overrides]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        head, *sites = [line for line in done.stdout.splitlines() if line.strip()]
        assert " reads of device values or blocking copies to it in one step " in head
        assert int(head.split()[0]) == sum(int(s.split(" x ")[0]) for s in sites if " x " in s)  # each read placed
        return int(head.split()[0]), sites

    assert audit() == (0, [])  # the quickstart's plain summed step: sync-free (multitask/stepper.py)
    n, sites = audit("weighting=uw")  # a loss weighting reads the step's losses: the ordinary step
    assert n > 0 and any("optim/grads.py" in s and "all_finite" in s for s in sites)


def test_host_syncs_counts_blocking_copies_to_the_device_and_not_the_others():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from host_syncs import BlockingCopies
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import collections

    import torch

    reads = collections.Counter()
    host, device = torch.ones(3), torch.empty(3, device="meta")
    with BlockingCopies(reads):
        host.to("meta")  # counted
        host.to("meta", non_blocking=True)
        device.copy_(host)  # counted
        device.copy_(host, non_blocking=True)
        device.to("meta")  # already there: no copy from the host
    assert sum(reads.values()) == 2
