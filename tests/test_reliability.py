"""Issue 20's classes of bad input, each with cases of our own: files read without a guard, the operating system
saying no (a real full disk: a small tmpfs), values out of range, outputs written over, Python API types, dead ends,
messages, sweeps. Each ends in exactly one `minbert: error:` line and exit 2 (or a correct result), never a
traceback, and leaves every file that was there before as it was."""

import contextlib
import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minbert.cli import main
from minbert.errors import MinbertError
from tests.helpers import QUICKSTART, RESUMABLE, TINY
from tests.test_user_errors import error_line


def fails(argv, capsys, *parts) -> str:
    """Run the CLI in-process: exit 2, one error line holding each of `parts`."""
    assert main([str(a) for a in argv]) == 2, argv
    line = error_line(capsys.readouterr().err)
    for p in parts:
        assert p in line, (p, line)
    return line


def tree(root: Path) -> dict:
    """Every file under root with its bytes: what "left as it was" compares."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# 1. files a user hands us


@pytest.mark.parametrize(
    "content,parts",
    [
        (b"epochs: 2\nlr: \xff\n", ["bad.yaml:2: byte 0xff is not UTF-8"]),
        (b"- epochs: 2\n- lr: 1\n", ["bad.yaml: a config file must be a mapping of keys, got a list"]),
        (
            b"epochs: 2\ntasks:\n  sst: {head: linear}\n  sst: {head: linear}\n",
            ["bad.yaml:4:3:", "'sst' appears twice"],
        ),
        (b"epochs: [2\nlr: 1\n", ["bad.yaml:2:", "not valid YAML"]),
        (b"tasks: {sst: {batch_size: 8}, sst: {batch_size: 9}}\n", ["appears twice"]),
    ],
)
def test_a_bad_config_file_is_one_line(content, parts, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    fails(["train", path, f"out={tmp_path / 'run'}"], capsys, *parts)
    assert not (tmp_path / "run").exists()


def _checkpoint_copy(ckpt, d, config: bytes | None = None, tokenizer: bytes | None = None) -> Path:
    d.mkdir()
    for f in ("vocab.txt", "model.safetensors"):
        (d / f).symlink_to(ckpt / f)
    (d / "config.json").write_bytes(config if config is not None else (ckpt / "config.json").read_bytes())
    if tokenizer is not None:
        (d / "tokenizer_config.json").write_bytes(tokenizer)
    return d


@pytest.mark.parametrize(
    "config,tokenizer,part",
    [
        (b"[1, 2]", None, "config.json: a checkpoint config.json must hold a JSON object, got list"),
        (b'{"hidden_size": 384, "num_hidden', None, "config.json:1:"),
        (None, b'{"do_lower_case": tr', "tokenizer_config.json:1:"),
        (None, b'{"do_lower_case": "yes"}', "do_lower_case must be true or false"),
        (b'{"hidden_size": "384"}', None, "hidden_size: expected int, got '384'"),
        (b'{"hidden_size": 384, "num_attention_heads": 5}', None, "not a multiple of num_attention_heads 5"),
        (b'{"layer_norm_eps": -1}', None, "layer_norm_eps: -1.0 must be > 0"),
    ],
)
def test_a_damaged_checkpoint_file_is_one_line(config, tokenizer, part, ckpt, tmp_path, capsys):
    d = _checkpoint_copy(ckpt, tmp_path / "ckpt", config, tokenizer)
    fails(["train", QUICKSTART, f"checkpoint={d}", f"out={tmp_path / 'run'}"], capsys, part)
    assert not (tmp_path / "run").exists()


HEADER = "\tid\tsentence\tsentiment\n"


@pytest.mark.parametrize(
    "rows,part",
    [
        ('0\ta1\tgood\t3\n1\ta2\t"an open quote\t2\n' + "2\ta3\tfine\t1\n" * 20000, 'a quote (") opened there'),
        ("0\ta1\tgood\tinf\n", "label 'inf'"),
        ("0\ta1\tgood\tnan\n", "label 'nan'"),
    ],
    ids=["open-quote", "inf", "nan"],
)
def test_a_bad_data_row_is_one_line(rows, part, tmp_path, data_root, capsys):
    from minbert.data import DATASETS

    SST = DATASETS["sst"]
    from minbert.data.readers import read_examples

    path = tmp_path / "ids-sst-train.csv"
    path.write_text(HEADER + rows)
    with pytest.raises(MinbertError, match="ids-sst-train.csv"):
        read_examples(path, ("sentence",), SST.label, strict=True)
    for f in data_root.glob("*"):
        if not (tmp_path / f.name).exists():
            (tmp_path / f.name).symlink_to(f)
    strict = ["strict=true"] if "quote" not in part else []
    fails(["train", QUICKSTART, *TINY, *strict, f"data_dir={tmp_path}", f"out={tmp_path / 'run'}"], capsys, part)


def test_an_sts_label_that_is_not_finite_is_refused(tmp_path):
    from minbert.data import DATASETS

    STS = DATASETS["sts"]
    from minbert.data.readers import read_examples

    path = tmp_path / "sts-train.csv"
    path.write_text("\tid\tsentence1\tsentence2\tsimilarity\n0\ta\tx\ty\tinf\n1\tb\tx\ty\t2.5\n")
    with pytest.raises(MinbertError, match="sts-train.csv:2: malformed row: label 'inf'"):
        read_examples(path, ("sentence1", "sentence2"), STS.label, strict=True)


def _copy_run(tiny_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    return run


@pytest.mark.parametrize(
    "text,part",
    [
        ('{"dev": {"sst/acc": 0.4', "summary.json:1:"),
        ('{"dev": {"sst/acc": "high"}}', "'dev' must map"),
        ('{"folder": 3, "step": "x"}', "'dev' must map"),  # no "dev" at all: found by the long fuzz run
    ],
)
def test_a_damaged_summary_is_one_line(text, part, tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    (run / "summary.json").write_text(text)
    fails(["compare", run, "--chart", tmp_path / "c.png"], capsys, part)
    fails(["ensemble", run, "--out", tmp_path / "ens"], capsys, part)
    assert not (tmp_path / "ens").exists()


def test_a_metrics_log_cut_off_mid_line_is_dropped_with_a_warning(tmp_path, caplog):
    from minbert.runs import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.write({"step": step, "train/sst": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "train/s')  # a kill during the write
    assert [r["step"] for r in log.read()] == [1, 2, 3]
    assert "the last line was cut off mid-write; dropped" in caplog.text
    log.truncate_after(2)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "x\n{"step": 3}\n')  # damage mid-file
    with pytest.raises(MinbertError, match="metrics.jsonl:2: not valid JSON"):
        log.read()


# 2. the operating system saying no


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of `size` at path: a real full disk. Skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_during_train_is_one_line_and_the_run_resumes(tmp_path):
    """The first resumable checkpoint (weights and optimizer, ~270 MB) fits; the next one does not. One line, the
    earlier checkpoint intact; with space again, --resume finishes the run."""
    disk = tmp_path / "disk"
    with small_disk(disk, "330m"):
        run = disk / "run"
        cmd = [sys.executable, "-m", "minbert", "train", str(QUICKSTART), *TINY, *RESUMABLE, f"out={run}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 2, done.stderr
        line = error_line(done.stderr)
        assert "No space left on device" in line and "minbert train --resume" in line
        assert not list(run.rglob("*.tmp"))
        last = json.loads((run / "last.json").read_text())
        assert last["step"] == 2
        subprocess.run(["mount", "-o", "remount,size=2g", str(disk)], check=True)
        resumed = subprocess.run(
            [sys.executable, "-m", "minbert", "train", "--resume", str(run)], capture_output=True, text=True
        )
        assert resumed.returncode == 0, resumed.stderr
        assert (run / "summary.json").is_file()


def _full(disk: Path, argv, capsys):
    keep = disk / "keep.txt"
    keep.write_text("mine")
    before = tree(disk)
    line = fails(argv, capsys, "No space left on device", "free some space")
    assert tree(disk) == before, "the disk holds what it held before"
    return line


def test_a_full_disk_during_predict_ensemble_export_is_one_line_and_changes_nothing(tiny_run, tmp_path, capsys):
    run = tiny_run[0]
    with small_disk(tmp_path / "disk", "12k") as disk:
        _full(disk, ["predict", run, "--out", disk / "preds"], capsys)
        _full(disk, ["ensemble", run, run, "--out", disk / "ens"], capsys)
        _full(disk, ["export", run, disk / "hf", "--format", "hf"], capsys)


def test_a_safetensors_write_error_becomes_the_os_error_it_is(monkeypatch, tmp_path, capsys):
    from safetensors import SafetensorError

    from minbert.runs import save_tensors

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              '"No space left on device" })')  # fmt: skip

    monkeypatch.setattr("minbert.runs.save_file", full)
    with pytest.raises(OSError) as e:
        save_tensors(tmp_path / "w.safetensors", {})
    assert e.value.errno == errno.ENOSPC and str(tmp_path / "w.safetensors") == e.value.filename
    assert not list(tmp_path.iterdir())


def test_predict_out_into_a_missing_folder_creates_it_and_a_file_path_is_refused(tiny_run, tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    assert main(["predict", str(tiny_run[0]), "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir() if p.name != ".minbert-output")  # the mark --overwrite reads
    assert written == sorted(p.name for p in (tiny_run[0] / "predictions").iterdir())
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    fails(["predict", tiny_run[0], "--out", a_file], capsys, f"{a_file}: is a file, not a folder")
    fails(["predict", tiny_run[0], "--out", a_file / "p"], capsys, f"{a_file} is a file, not a folder")
    assert a_file.read_text() == "x"


# 3. values checked by range


@pytest.mark.parametrize(
    "override,part",
    [
        ("seed=-1", "seed: -1 must be in [0, 4294967295]"),
        ("tasks.sst.loss_args={label_smoothing: 1.5}", "tasks.sst.loss_args.label_smoothing: 1.5 must be in [0, 1]"),
        ("tasks.sst.loss_args={smoothing: 0.1}", "tasks.sst.loss_args.smoothing: unknown argument; valid: label_smoo"),
        ("pals.heads=-2", "pals.heads: -2 must be >= 1"),
        ("tasks.sts.cosine_scale=-1", "tasks.sts.cosine_scale: -1.0 must be >= 0"),
        ("regularizers={smart: {eta: 0}}", "regularizers.smart.eta: 0.0 must be > 0"),
        ("regularizers={bregman: {beta: 1.0}}", "regularizers.bregman.beta: 1.0 must be in [0, 1)"),
        (("lr_schedule=plateau", "lr_schedule_args={factor: 0}"), "lr_schedule_args.factor: 0.0 must be in (0, 1]"),
        (("combiner=gradvac", "combiner_args={beta: 1.5}"), "combiner_args.beta: 1.5 must be in [0, 1]"),
        ("tasks.sts.extra_losses={mnrl: {scale: -1}}", "tasks.sts.extra_losses.mnrl.scale: -1.0 must be > 0"),
        ("lr=.nan", "lr: nan is not a finite number"),
        ("max_minutes=.inf", "max_minutes: inf is not a finite number"),
        ("tasks.sst.extra_layers=-1", "tasks.sst.extra_layers: -1 must be in [0, 16]"),
        ("divergence_factor=0.5", "divergence_factor: 0.5 must be > 1 (0 = off)"),
    ],
)
def test_a_value_out_of_range_is_refused_before_any_work(override, part, tmp_path, capsys):
    overrides = override if isinstance(override, tuple) else (override,)
    fails(["train", QUICKSTART, *overrides, f"out={tmp_path / 'run'}"], capsys, part)
    assert not (tmp_path / "run").exists()


def test_ranges_hold_for_a_config_built_in_python():
    from minbert.multitask.config import TaskConfig, TrainConfig

    with pytest.raises(MinbertError, match=r"tasks.sst.batch_size: 0 must be >= 1"):
        TrainConfig(tasks={"sst": TaskConfig(batch_size=0)}).validate()
    with pytest.raises(MinbertError, match=r"seed: -5 must be"):
        TrainConfig(seed=-5).validate()


# 4. outputs written over what is there


def test_ensemble_into_a_run_or_a_non_empty_folder_is_refused(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    before = tree(run)
    fails(["ensemble", run, "--out", run], capsys, "is one of the runs")
    other = tmp_path / "other"
    shutil.copytree(run, other)
    fails(["ensemble", run, "--out", other], capsys, f"{other}: not empty", "--overwrite")
    assert tree(run) == before and tree(other) == before
    assert main(["ensemble", str(run), "--out", str(tmp_path / "ens")]) == 0
    assert main(["ensemble", str(run), "--out", str(tmp_path / "ens"), "--overwrite"]) == 0


def test_a_refused_export_leaves_nothing_and_the_retry_works(tiny_run, tmp_path, capsys):
    out = tmp_path / "hf"
    fails(["export", tiny_run[0], out, "--format", "hf", "--task", "quora"], capsys, "quora:")
    assert not out.exists() and not list(tmp_path.glob(".hf*"))
    fails(
        ["export", tiny_run[0], out, "--format", "hf", "--int8"], capsys, "--int8 with --format hf", "--precision int8"
    )
    assert not out.exists() and not list(tmp_path.glob(".hf*"))
    assert main(["export", str(tiny_run[0]), str(out), "--format", "hf", "--task", "sst"]) == 0
    before = tree(out)
    fails(["export", tiny_run[0], out, "--format", "hf"], capsys, "not empty", "--overwrite")
    assert tree(out) == before
    assert main(["export", str(tiny_run[0]), str(out), "--format", "hf", "--task", "sst", "--overwrite"]) == 0


def test_predict_input_out_refuses_an_existing_file(tiny_run, tmp_path, capsys):
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("a fine film\n")
    out.write_text("keep")
    fails(["predict", tiny_run[0], "--task", "sst", "--input", src, "--out", out], capsys, "exists", "--overwrite")
    assert out.read_text() == "keep"
    argv = ["predict", str(tiny_run[0]), "--task", "sst", "--input", str(src), "--out", str(out), "--overwrite"]
    assert main(argv) == 0 and json.loads(out.read_text())["input"] == "a fine film"


def test_the_lock_refuses_a_live_writer_and_reclaims_a_dead_or_reused_pid(tmp_path, monkeypatch):
    monkeypatch.setattr("minbert.runs.LOCK_GRACE_S", 0.2)
    import os

    from minbert.runs import RunLock, _start_time

    (tmp_path / ".lock").write_text(f"{os.getppid()} {_start_time(os.getppid())}")  # a live process: our parent
    with pytest.raises(MinbertError, match="is training into this directory"):
        RunLock(tmp_path).__enter__()
    (tmp_path / ".lock").write_text(f"{os.getppid()} 1")  # that pid, but started at another time: reused
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())


def test_resume_of_a_run_still_training_is_refused(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("minbert.runs.LOCK_GRACE_S", 0.2)
    import os

    from minbert.runs import _start_time

    run = _copy_run(tiny_run, tmp_path)
    (run / "summary.json").unlink()
    metrics = (run / "metrics.jsonl").read_bytes()
    (run / ".lock").write_text(f"{os.getppid()} {_start_time(os.getppid())}")
    fails(["train", "--resume", run], capsys, "another process", "is training into this directory")
    assert (run / "metrics.jsonl").read_bytes() == metrics


# 5. Python API types


def test_the_api_takes_one_example_as_one_and_refuses_what_is_not_text(tiny_run):
    import minbert

    m = minbert.load(tiny_run[0])
    assert len(m.predict("sst", "a gorgeous film")) == 1
    assert m.predict("sst", "a gorgeous film") == m.predict("sst", ["a gorgeous film"])
    assert len(m.predict("sts", ("a man plays", "a person plays"))) == 1
    assert m.embed("hello").shape[0] == 1 and m.embed([]).shape[0] == 0
    assert len(m.predict("sst", (s for s in ["one", "two"]))) == 2  # any iterable
    for call, part in [
        (lambda: m.predict("sst", [None]), "sst input 1: expected one sentence"),
        (lambda: m.predict("sst", None), "inputs is None"),
        (lambda: m.predict("sst", ["ok"], batch_size=0), "batch_size 0: must be a whole number >= 1"),
        (lambda: m.predict("sst", ["ok"], batch_size=2.5), "batch_size 2.5"),
        (lambda: m.predict("sts", "one string"), "a pair task needs (sentence_a, sentence_b) pairs"),
        (lambda: m.predict("sts", [("a", "b", "c")]), "sts input 1: expected a pair"),
        (lambda: m.predict("sst", {"a": 1}), "expected a list of inputs, got dict"),
        (lambda: m.predict("sst", 42), "expected a list of inputs, got int"),
        (lambda: m.embed([None]), "embed input 1"),
        (lambda: m.predict(["sst"], ["x"]), "task ['sst']: this run was trained on"),
    ]:
        with pytest.raises(MinbertError, match=None) as e:
            call()
        assert part in str(e.value), (part, str(e.value))


# 6. dead ends


def test_a_run_stopped_before_its_first_checkpoint_can_be_restarted(tmp_path, capsys):
    from minbert.config import dump_yaml, load_config
    from minbert.multitask.config import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    dump_yaml(load_config(TrainConfig, QUICKSTART, TINY), run / "config.yaml")
    (run / "metrics.jsonl").write_text('{"step": 1, "train/sst": 1.6}\n')
    fails(["train", QUICKSTART, f"out={run}"], capsys, "stopped before its first checkpoint", "--overwrite")
    fails(["train", "--resume", run], capsys, "stopped before its first checkpoint", "--overwrite")
    fails(["evaluate", run], capsys, "stopped before its first evaluation", "--overwrite")


def test_non_finite_dev_metrics_stop_the_run_as_diverged(monkeypatch, tmp_path, capsys):
    from minbert.multitask.runner import Runner

    real = Runner.evaluate

    def nan_sts(self, data):
        metrics, preds = real(self, data)
        return {**metrics, "sts/pearson": float("nan")}, preds

    monkeypatch.setattr(Runner, "evaluate", nan_sts)
    run = tmp_path / "run"
    fails(
        ["train", QUICKSTART, *TINY, *RESUMABLE, f"out={run}"],
        capsys,
        "dev metrics not finite (sts/pearson nan)",
        str(run),
    )
    assert (run / "last.json").is_file()  # the last good resumable checkpoint stays


# 7. messages


def test_messages_name_what_the_user_typed(tmp_path, capsys):
    fails(["classify", "--batch-size", "-1", "--out", tmp_path / "c"], capsys, "--batch-size: -1 must be >= 1")
    fails(["classify", "--max-length", "2", "--out", tmp_path / "c"], capsys, "--max-length: 2 must be >= 3")
    folder = tmp_path / "conf.yaml"
    folder.mkdir()
    fails(["train", folder], capsys, f"{folder}: is a folder, not a config file")
    fails(["train", tmp_path / "missing.yaml"], capsys, "missing.yaml: no such config file")
    assert not (tmp_path / "c").exists()


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\ntasks:\n  sst: {head: linear\n  sts: {}\n")
    line = fails(["train", path], capsys, "c.yaml:4:")
    assert len(line) < 300


# 8. sweeps


@pytest.mark.parametrize(
    "seeds,part", [("[1, 1]", "seed 1 is listed twice"), ("[]", "non-empty list"), ("[1, true]", "non-empty list")]
)
def test_sweep_seeds_are_each_one_run(seeds, part, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(f"base: {QUICKSTART}\nvariants: {{a: []}}\nseeds: {seeds}\nout: {tmp_path / 'o'}\n")
    fails(["sweep", path, "--dry-run"], capsys, part)


# the boundary keeps our own bugs visible


def test_the_boundary_keeps_a_bug_of_ours_as_a_traceback(monkeypatch, tmp_path):
    def bug(run):
        return {}["missing"]

    monkeypatch.setattr("minbert.plot.plot_run", bug)
    with pytest.raises(KeyError):
        main(["plot", str(tmp_path)])


def test_sigterm_unwinds_like_ctrl_c(tmp_path):
    """A SIGTERM during training releases the lock and says how to continue, exit 130."""
    import signal
    import time

    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "minbert",
        "train",
        str(QUICKSTART),
        *TINY,
        *RESUMABLE,
        "steps_per_epoch=400",
        f"out={run}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "last.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "minbert: interrupted" in err and "--resume" in err and "Traceback" not in err
    assert not (run / ".lock").exists()
