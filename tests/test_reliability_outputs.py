"""Issue 41, classes 6 and 7: what plot, analyze and compare read is checked before use (metrics.jsonl line by line,
--perplexity, a run with nothing to analyze), their outputs never replace a file without --overwrite, --overwrite
replaces a run or an output folder whole, and staged folders of dead processes are cleaned. Each bad case ends in
one `minbert: error:` line and exit 2, with every file that was there left as it was."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minbert.cli import main
from minbert.errors import MinbertError
from minbert.files import OUTPUT_MARK
from tests.helpers import QUICKSTART, TINY
from tests.test_fuzz import examples
from tests.test_reliability import fails, tree
from tests.test_user_errors import error_line

STEP = {"step": 2, "epoch": 1, "train/loss/sst": 1.5, "train/loss/sts": 2.5}
EPOCH = {"step": 4, "epoch": 1, "time": 3.0, "train/loss/sst": 1.4, "dev/sst/acc": 0.4, "dev/overall": 0.5, "lr": 1e-5}
CONFLICT = {"step": 4, "epoch": 1, "conflict/sst-sts/negative": 3, "conflict/sst-sts/mean_cos": -0.1}


def metrics_run(tmp_path, *records, name="run", lines=()) -> Path:
    """A folder with only a metrics.jsonl: what plot reads."""
    run = tmp_path / name
    run.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in lines)
    (run / "metrics.jsonl").write_text(text)
    return run


def no_sst_run(tmp_path, *records) -> Path:
    """A run folder of quora and sts (no sst): a saved config and a metrics log, no checkpoint."""
    from minbert.config import dump_yaml, load_config
    from minbert.multitask.config import TrainConfig

    run = metrics_run(tmp_path, STEP, *records)
    dump_yaml(load_config(TrainConfig, QUICKSTART, TINY).restricted_to(["quora", "sts"]), run / "config.yaml")
    return run


def summary_run(root: Path, name: str, acc: float) -> Path:
    run = root / name
    run.mkdir(parents=True)
    dev = {"sst/acc": acc, "quora/acc": 0.7, "sts/pearson": 0.8, "overall": 0.6}
    (run / "summary.json").write_text(json.dumps({"dev": dev, "steps": 10, "wall_time_s": 120.0}))
    return run


# 6. outputs never clobber


def test_plot_refuses_to_replace_its_plots_without_overwrite(tmp_path, capsys):
    run = metrics_run(tmp_path, STEP, EPOCH)
    assert main(["plot", str(run)]) == 0
    before = tree(run)
    fails(["plot", run], capsys, f"{run / 'plots' / 'loss_per_task.png'}: exists", "--overwrite")
    assert tree(run) == before
    (run / "metrics.jsonl").write_text(json.dumps(STEP) + "\n" + json.dumps({**STEP, "step": 3}) + "\n")  # longer
    assert main(["plot", str(run), "--overwrite"]) == 0
    assert tree(run)["plots/loss_per_task.png"] != before["plots/loss_per_task.png"]


def test_compare_refuses_an_existing_chart_or_a_chart_that_is_not_a_png(tmp_path, capsys):
    run = summary_run(tmp_path, "run", 0.5)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    fails(["compare", run, "--chart", notes], capsys, "--chart", "name a .png file")
    assert notes.read_text() == "my notes"
    chart = tmp_path / "c.png"
    chart.write_bytes(b"an earlier chart")
    fails(["compare", run, "--chart", chart], capsys, f"{chart}: exists", "--overwrite")
    assert chart.read_bytes() == b"an earlier chart"
    assert main(["compare", str(run), "--chart", str(chart), "--overwrite"]) == 0
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_analyze_refuses_to_replace_its_files_without_overwrite(tmp_path, capsys):
    run = no_sst_run(tmp_path, CONFLICT)
    assert main(["analyze", str(run)]) == 0
    before = tree(run)
    fails(["analyze", run], capsys, f"{run / 'plots' / 'conflicts.png'}: exists", "--overwrite")
    assert tree(run) == before
    assert main(["analyze", str(run), "--overwrite"]) == 0


def test_overwrite_of_a_run_replaces_it_whole(tmp_path, capsys):
    from minbert.runs import check_run_dir, clear_run_dir

    run = tmp_path / "run"
    for d in ("adapters/sst", "tensorboard", "checkpoints/best"):
        (run / d).mkdir(parents=True)
    (run / "config.yaml").write_text("name: earlier\n")
    (run / "summary.json").write_text("{}")
    (run / "adapters" / "sst" / "adapter_model.safetensors").write_bytes(b"old")
    (run / ".lock").write_text(str(os.getpid()))  # the lock the new run holds when it clears the folder
    check_run_dir(run, resume=False, overwrite=True)
    clear_run_dir(run)
    assert [p.name for p in run.iterdir()] == [".lock"]
    here = Path.cwd()
    try:  # the folder we are in is never emptied
        os.chdir(run)
        (run / "config.yaml").write_text("name: earlier\n")
        fails(["train", QUICKSTART, "out=.", "--overwrite"], capsys, "holds the current folder", "out=")
        assert (run / "config.yaml").read_text() == "name: earlier\n"
    finally:
        os.chdir(here)


def test_overwrite_of_an_output_folder_leaves_nothing_of_the_earlier_one(tmp_path):
    from minbert.files import staged

    out = tmp_path / "export"
    with staged(out) as tmp:  # a LoRA run's export: the encoder and adapters/
        (tmp / "model.safetensors").write_bytes(b"lora run")
        (tmp / "adapters" / "sst").mkdir(parents=True)
        (tmp / "adapters" / "sst" / "adapter_model.safetensors").write_bytes(b"sst adapter")
    with staged(out) as tmp:  # --overwrite with a run that has no adapters
        (tmp / "model.safetensors").write_bytes(b"plain run")
    files = tree(out)
    assert files.pop(OUTPUT_MARK) and files == {"model.safetensors": b"plain run"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.parametrize("mine", [["notes.txt"], ["model.safetensors", "config.json"], ["sub/a.txt"]])
def test_overwrite_never_deletes_a_folder_minbert_did_not_write(tmp_path, capsys, mine):
    """--overwrite replaces an earlier output whole, but a folder of the user's own files (even ones named like an
    export's) is refused before any work, and left as it was."""
    from minbert.files import check_output, staged

    out = tmp_path / "x"
    for name in mine:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("mine")
    before = tree(out)
    with pytest.raises(MinbertError, match="minbert did not write"):
        check_output(out, True, "export")
    with pytest.raises(MinbertError, match="minbert did not write"):
        with staged(out):
            pass
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    fails(
        ["export", str(tmp_path / "no-run"), str(out), "--format", "hf", "--overwrite"], capsys, "minbert did not write"
    )
    assert tree(out) == before
    with staged(out, mine=True) as tmp:  # a command's own folder (a run's predictions/) is rewritten as always
        (tmp / "a.csv").write_text("new")
    assert set(tree(out)) == {"a.csv", OUTPUT_MARK}


def test_staged_never_replaces_a_training_run_or_the_current_folder(tmp_path):
    from minbert.files import staged

    run = summary_run(tmp_path, "run", 0.5)
    (run / "config.yaml").write_text("name: a run\n")
    before = tree(run)
    with pytest.raises(MinbertError, match="holds a training run"):
        with staged(run):
            pass
    here = Path.cwd()
    try:
        os.chdir(tmp_path)
        with pytest.raises(MinbertError, match="holds the current folder"):
            with staged(Path(".")):
                pass
    finally:
        os.chdir(here)
    assert tree(run) == before


def test_staged_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    from minbert.files import staged

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead.pid, live.pid):
            (tmp_path / f".out.partial-{pid}" / "big").mkdir(parents=True)  # a SIGKILLed export's leftovers
        (tmp_path / f".other.old-{dead.pid}").mkdir()
        (tmp_path / "notes.partial-1").write_text("a user's file")  # not hidden: not ours
        (tmp_path / f".notes.old-{dead.pid}").write_text("a user's file")  # a file: not ours
        with staged(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([f".out.partial-{live.pid}", f".notes.old-{dead.pid}", "notes.partial-1", "out"])
    finally:
        live.kill()
        live.wait()


# 7. what plot, analyze and compare read


@pytest.mark.parametrize(
    "line,parts",
    [
        ('{"epoch": 1, "train/loss/sst": 1.2}', ["metrics.jsonl:2:", "no 'step'"]),
        ('{"step": -3, "train/loss/sst": 1.2}', ["metrics.jsonl:2:", "'step' is -3"]),
        ('{"step": "7", "train/loss/sst": 1.2}', ["metrics.jsonl:2:", "'step' is \"7\""]),
        ('{"step": 4, "epoch": 1, "dev/sst/acc": "high"}', ["metrics.jsonl:2:", "'dev/sst/acc' is \"high\""]),
        ('{"step": 4, "dev/sst/acc": 0.5}', ["metrics.jsonl:2:", "no 'epoch'"]),
        ('{"step": 4, "train/loss/sst": true}', ["metrics.jsonl:2:", "numbers or null"]),
        ('{"step": 4, "train/loss/sst": [1]}', ["metrics.jsonl:2:", "numbers or null"]),
        ("[1, 2]", ["metrics.jsonl:2:", "must be a JSON object"]),
        ("step 4 loss 1.2", ["metrics.jsonl:2:", "not valid JSON"]),
    ],
)
def test_a_bad_metrics_record_is_one_line_naming_file_and_line(line, parts, tmp_path, capsys):
    run = metrics_run(tmp_path, STEP, lines=[line, json.dumps(EPOCH)])
    fails(["plot", run], capsys, str(run / "metrics.jsonl"), *parts)
    assert not (run / "plots").exists()


def test_analyze_reads_its_metrics_log_checked_too(tmp_path, capsys):
    run = no_sst_run(tmp_path, {**CONFLICT, "conflict/sst-sts/negative": "many"})
    fails(["analyze", run], capsys, "metrics.jsonl:2:", "'conflict/sst-sts/negative' is \"many\"")
    assert not (run / "plots").exists()


def test_a_null_metric_is_a_gap_not_an_error(tmp_path):
    run = metrics_run(tmp_path, STEP, {**STEP, "step": 3, "train/loss/sst": None}, EPOCH)
    assert main(["plot", str(run)]) == 0
    assert (run / "plots" / "dev_metrics.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("value", ["nan", "-5", "0", "1e6", "inf"])
def test_perplexity_out_of_range_is_one_line_before_any_work(value, tmp_path, capsys, monkeypatch):
    run = no_sst_run(tmp_path, CONFLICT)
    monkeypatch.setattr("minbert.multitask.run.load_run_config", lambda *a: pytest.fail("work began"))
    fails(["analyze", run, "--perplexity", value], capsys, f"--perplexity {float(value):g}", "from 1 to 100")
    assert not (run / "plots").exists()


def test_analyze_of_a_run_without_sst_says_what_it_did(tmp_path, capsys, caplog):
    run = no_sst_run(tmp_path)
    fails(["analyze", run], capsys, f"{run}: nothing to analyze", "quora, sts", "conflict_stats")
    assert not (run / "plots").exists()
    (run / "metrics.jsonl").write_text(json.dumps(STEP) + "\n" + json.dumps(CONFLICT) + "\n")
    assert main(["analyze", str(run)]) == 0
    assert capsys.readouterr().out.split() == [str(run / "plots" / "conflicts.png")]
    assert "no sst task: only the gradient-conflict plot" in caplog.text


def test_compare_names_runs_with_the_same_folder_name_apart(tmp_path, capsys):
    base, lora = (
        summary_run(tmp_path / "sweep", "base/seed1", 0.41),
        summary_run(tmp_path / "sweep", "lora/seed1", 0.52),
    )
    other = summary_run(tmp_path, "other", 0.3)
    assert main(["compare", str(base), str(lora), str(other), "--chart", str(tmp_path / "c.png")]) == 0
    rows = [line.split(" | ")[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert rows == [["| base/seed1", "0.4100"], ["| lora/seed1", "0.5200"], ["| other", "0.3000"]]


def test_compare_refuses_a_summary_whose_wall_time_is_not_a_number(tmp_path, capsys):
    run = summary_run(tmp_path, "run", 0.5)
    data = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**data, "wall_time_s": "2 min"}))
    fails(["compare", run, "--chart", tmp_path / "c.png"], capsys, "summary.json: 'wall_time_s' must be a number")
    assert not (tmp_path / "c.png").exists()


def test_a_run_into_a_folder_of_other_files_is_refused_so_no_overwrite_can_empty_it(tmp_path, capsys):
    """Bad-input round 2 (train-overwrite-twice-*): `train out=DATA` into a folder of the user's files, then
    `--overwrite`, emptied it whole. The first step is refused now, with or without --overwrite; files untouched."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    (data / "train.csv").write_text("id,text\n")
    for extra in ([], ["--overwrite"]):
        assert main(["train", str(QUICKSTART), *TINY, f"out={data}", *extra]) == 2
        line = error_line(capsys.readouterr().err)
        assert "holds files that are not a run's (notes.txt and 1 more)" in line and "new or empty out=" in line
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt", "train.csv"]
    assert (data / "notes.txt").read_text() == "mine"


def test_predict_out_naming_its_input_is_refused_and_the_input_kept(tiny_run, tmp_path, capsys):
    """Bad-input round 2 (predict-out-is-input): --input f.txt --out f.txt --overwrite replaced the input."""
    f = tmp_path / "f.txt"
    f.write_text("a fine film\n")
    argv = ["predict", tiny_run[0], "--task", "sst", "--input", f, "--out", f, "--overwrite"]
    fails(argv, capsys, "is the --input file")
    assert f.read_text() == "a fine film\n"


@pytest.mark.parametrize("setting, part", [("epochs=1000000000", "epochs:"), ("lora.rank=1000000000", "lora.rank:")])
def test_sizes_with_no_sane_use_are_refused_before_any_allocation(setting, part, tmp_path, capsys):
    """Bad-input round 2: epochs=10**9 built every epoch's plan (memory ran away); a huge LoRA rank was the
    allocator's traceback."""
    extra = ["lora.enabled=true"] if setting.startswith("lora") else []
    fails(["train", QUICKSTART, *TINY, *extra, setting, f"out={tmp_path / 'r'}"], capsys, part, "must be in [1,")
    assert not (tmp_path / "r").exists()


def test_an_ensemble_threshold_out_of_range_is_refused_and_one_no_run_reaches_is_said(tiny_run, tmp_path, capsys,
                                                                                   caplog):  # fmt: skip
    """Issue 41's `--min sst=45` / `sst=nan` dropped SST silently. Out of range is refused; a threshold in range
    that no run reaches leaves its task out (report 001's per-task thresholds) with a warning saying so."""
    for bad in ("sst=45", "sst=nan"):
        fails(["ensemble", tiny_run[0], "--out", tmp_path / "e", "--min", bad], capsys, f"--min '{bad}'", "-1 to 1")
    assert not (tmp_path / "e").exists()
    with caplog.at_level("WARNING"):
        assert main(["ensemble", str(tiny_run[0]), "--out", str(tmp_path / "e"), "--min", "quora=0.99"]) == 0
    assert any("--min quora=0.99: no run reaches it" in r.getMessage() for r in caplog.records)


_NAMES = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..")
)


@settings(max_examples=examples(30), deadline=None)
@given(names=st.lists(_NAMES, min_size=1, max_size=4, unique=True), nested=st.booleans(), mine=st.booleans())
def test_overwrite_replaces_only_what_minbert_wrote_generated(tmp_path_factory, names, nested, mine):
    """Any folder of files minbert did not write - whatever their names, top level or nested - survives every
    staged --overwrite untouched (refused before any work); one a staged output wrote (or a command's own) is
    replaced whole."""
    from minbert.files import check_output, staged

    out = tmp_path_factory.mktemp("o") / "x"
    for name in names:
        path = out / "sub" / name if nested else out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    before = tree(out)
    if mine:  # the command's own folder: replaced, nothing of the old left
        with staged(out, mine=True) as tmp:
            (tmp / "new.csv").write_text("new")
        assert set(tree(out)) == {"new.csv", OUTPUT_MARK}
        with staged(out) as tmp:  # and from then on an output minbert wrote: --overwrite replaces it
            (tmp / "newer.csv").write_text("newer")
        assert set(tree(out)) == {"newer.csv", OUTPUT_MARK}
        return
    with pytest.raises(MinbertError, match="minbert did not write"):
        check_output(out, True)
    with pytest.raises(MinbertError, match="minbert did not write"):
        with staged(out):
            raise AssertionError("staged ran its body for a folder it refuses")
    assert tree(out) == before


def test_resume_names_what_it_ignores_and_leaves_a_finished_run_as_it_is(tiny_run, capsys, caplog):
    """--resume replays the saved config: a CONFIG, --checkpoint or overrides beside it were dropped without a word,
    and resuming a finished run rewrote its summary.json."""
    caplog.set_level("INFO")
    run = tiny_run[0]
    before = tree(run)
    argv = ["train", str(QUICKSTART), "--resume", str(run), "--checkpoint", "/elsewhere", "epochs=5", "--budget"]
    assert main(argv) == 0
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for part in ("ignoring on --resume", "quickstart.yaml", "--checkpoint /elsewhere", "epochs=5", "--budget"):
        assert part in warned, (part, warned)
    assert "finished already" in caplog.text
    assert tree(run) == before


def test_predict_task_or_format_without_input_is_refused(tiny_run, capsys, tmp_path):
    for flag in (["--task", "sst"], ["--format", "csv"]):
        fails(["predict", tiny_run[0], *flag, "--out", tmp_path / "p"], capsys, flag[0], "only with --input")
    assert not (tmp_path / "p").exists()


def test_predict_input_reads_a_cs224n_file_by_its_header(tiny_run, capsys, tmp_path):
    """A CS224N data file as --input: its header and id column were read as sentences."""
    from minbert.api import read_inputs

    sst = tmp_path / "ids-sst-dev.csv"
    sst.write_text('\tid\tsentence\tsentiment\n0\tab12\t A fine film .\t3\n1\tcd34\t"Quoted" , dull\t1\n\n')
    assert read_inputs(str(sst), False, "sst") == ["A fine film .", "Quoted , dull"]
    quora = tmp_path / "quora.csv"
    quora.write_text("\tid\tsentence1\tsentence2\tis_duplicate\n7\tx\tHow?\tWhy?\t0.0\n")
    assert read_inputs(str(quora), True, "quora") == [("How?", "Why?")]
    with pytest.raises(MinbertError, match=r"quora.csv:1: a pair file \(sentence1, sentence2\), but sst reads"):
        read_inputs(str(quora), False, "sst")
    short = tmp_path / "short.csv"
    short.write_text("id\tsentence\n0\n")
    with pytest.raises(MinbertError, match="short.csv:2: 1 column"):
        read_inputs(str(short), False, "sst")
    plain = tmp_path / "plain.txt"
    plain.write_text("a sentence about sentences\n")  # no tab: not a table, whatever its words
    assert read_inputs(str(plain), False, "sst") == ["a sentence about sentences"]
    assert main(["predict", str(tiny_run[0]), "--task", "sst", "--input", str(sst)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_predict_stdin_that_is_not_utf8_names_stdin(monkeypatch):
    import io

    from minbert.api import read_inputs

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("fine\ncaf\xe9 film\n".encode("latin-1"))))
    with pytest.raises(MinbertError, match=r"stdin:2: byte 0xe9 is not UTF-8"):
        read_inputs("-", False, "sst")
