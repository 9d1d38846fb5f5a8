"""The divergence guard: non-finite steps are skipped and counted, a run that keeps diverging stops with one line,
and no checkpoint ever holds non-finite weights."""

import json

import pytest
import torch

from minbert.cli import main
from minbert.errors import MinbertError
from minbert.multitask.config import TrainConfig
from minbert.multitask.train import TrainState, guard
from tests.helpers import QUICKSTART, TINY


def test_guard_skips_counts_and_stops_after_max_bad_steps(tmp_path):
    cfg, st = TrainConfig(max_bad_steps=3), TrainState(["sst"])
    assert guard(st, {"sst": 1.6}, False, 1, cfg, tmp_path)
    assert not guard(st, {"sst": float("nan")}, True, 2, cfg, tmp_path)
    assert not guard(st, {"sst": float("inf")}, True, 3, cfg, tmp_path)
    assert guard(st, {"sst": 1.5}, False, 4, cfg, tmp_path) and st.bad_steps == 0 and st.skipped == 2
    guard(st, {"sst": float("nan")}, True, 5, cfg, tmp_path)
    guard(st, {"sst": float("nan")}, True, 6, cfg, tmp_path)
    with pytest.raises(
        MinbertError, match=r"step 7: the loss or gradient is not finite for 3 steps in a row \(sst nan\)"
    ):
        guard(st, {"sst": float("nan")}, True, 7, cfg, tmp_path)


def test_guard_stops_an_exploding_loss_but_not_a_noisy_one(tmp_path):
    cfg, st = TrainConfig(divergence_factor=100), TrainState(["sts"])
    for step in range(20):
        assert guard(st, {"sts": 0.5 + 0.3 * (step % 3)}, False, step, cfg, tmp_path)
    assert guard(st, {"sts": 8.0}, False, 21, cfg, tmp_path)  # 12x its mean, and below the absolute floor of 10
    with pytest.raises(MinbertError, match="task sts's loss is 1e\\+09"):
        guard(st, {"sts": 1e9}, False, 22, cfg, tmp_path)
    assert guard(TrainState(["sts"]), {"sts": 1e9}, False, 1, TrainConfig(divergence_factor=0), tmp_path)  # off


@pytest.mark.slow
def test_a_diverging_run_stops_with_one_line_and_keeps_no_non_finite_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    assert main(["train", str(QUICKSTART), *TINY, "lr=1e30", "checkpoint_every=1", f"out={run}"]) == 2
    err = capsys.readouterr().err
    assert "diverged at lr 1e+30" in err and "Traceback" not in err
    for folder in (run / "checkpoints").glob("*"):
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(str(folder / "model.safetensors")).values())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(all(v == v for v in r.values() if isinstance(v, float)) for r in records)  # no NaN written


def test_a_new_run_into_a_directory_holding_a_run_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import minbert.multitask.train as tr

    run = tmp_path / "done"
    run.mkdir()
    (run / "config.yaml").write_text("name: earlier\n")
    (run / "summary.json").write_text("{}")
    monkeypatch.setattr(tr, "build", lambda *a, **k: pytest.fail("the model was built before the refusal"))
    assert main(["train", str(QUICKSTART), *TINY, f"out={run}"]) == 2
    err = capsys.readouterr().err
    assert f"{run}: already holds a run (config.yaml)" in err and "--resume" in err and "--overwrite" in err
    assert (run / "config.yaml").read_text() == "name: earlier\n"  # nothing lost


def test_overwrite_replaces_a_run_whole_and_clears_only_run_files_elsewhere(tmp_path):
    """A run folder is emptied whole (nothing of the earlier run, adapters/ included, stays beside the new one); a
    folder that holds no run (no config.yaml beside what training writes) loses only the files a run writes."""
    from minbert.runs import check_run_dir, clear_run_dir

    run = tmp_path / "r"
    (run / "checkpoints" / "last-1").mkdir(parents=True)
    (run / "adapters" / "sst").mkdir(parents=True)
    (run / "config.yaml").write_text("epochs: 1\n")
    (run / "metrics.jsonl").write_text("{}\n")
    check_run_dir(run, resume=False, overwrite=True)
    check_run_dir(run, resume=True, overwrite=False)
    clear_run_dir(run)
    assert list(run.iterdir()) == []
    other = tmp_path / "o"
    other.mkdir()
    (other / "metrics.jsonl").write_text("{}\n")
    (other / "notes.txt").write_text("mine")
    clear_run_dir(other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_second_process_is_kept_out_and_a_stale_lock_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr("minbert.runs.LOCK_GRACE_S", 0.2)
    import subprocess
    import sys

    from minbert.runs import RunLock

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(
            MinbertError, match=f"another process \\(pid {sleeper.pid}\\) is training into this directory"
        ):
            RunLock(tmp_path).__enter__()
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunLock(tmp_path):  # its process is gone: the lock is stale
        assert (tmp_path / ".lock").read_text().split()[0] == str(__import__("os").getpid())
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("native", [False, True])
def test_bf16_asked_for_on_a_cpu_that_emulates_it_warns_once(native, monkeypatch, caplog):
    """An explicit precision=bf16 where the CPU lacks bf16 runs, but says it is slower than fp32; auto stays silent."""
    import minbert.runs as runs

    monkeypatch.setattr(runs, "cpu_has_bf16", lambda: native)
    runs._warn_emulated_bf16.cache_clear()
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING", logger="minbert.runs"):
        assert runs.autocast(cpu, "auto")() is not None and runs.autocast(cpu, "fp32")() is not None
        assert not caplog.records
        for _ in range(2):
            with runs.autocast(cpu, "bf16")():
                assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == (0 if native else 1) and all("emulated" in m and "precision=auto" in m for m in warned)
    runs._warn_emulated_bf16.cache_clear()


@pytest.mark.parametrize("native,advice", [(False, "precision=fp32"), (True, "precision=bf16")])
def test_fp16_on_a_cpu_warns_once_with_what_to_use_instead(native, advice, monkeypatch, caplog):
    """fp16 autocast on a CPU ran many times slower than fp32 without a word (bf16 had its warning)."""
    import minbert.runs as runs

    monkeypatch.setattr(runs, "cpu_has_bf16", lambda: native)
    runs._warn_cpu_fp16.cache_clear()
    with caplog.at_level("WARNING", logger="minbert.runs"):
        for _ in range(2):
            runs.autocast(torch.device("cpu"), "fp16")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "fp16 on a CPU" in warned[0] and advice in warned[0], warned
    runs._warn_cpu_fp16.cache_clear()
