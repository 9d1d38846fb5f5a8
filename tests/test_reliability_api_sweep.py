"""Issue 41, classes 5-7: the Python API's arguments (paths, device, batch size, precision, the text itself) and the
sweep file's keys are checked at the boundary like the CLI's - one MinbertError naming the argument or key, its value
and what is valid - and the checks that can run before work do: a search's metric and parameters before its journal
or first trial, `export --int8`'s packages before the fp32 files. Then Hypothesis: generated sweep files and API
arguments give a result or a MinbertError, never another exception, and a refused sweep leaves no file behind."""

import sys
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest
import torch
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

import minbert
from minbert.cli import main
from minbert.errors import MinbertError
from minbert.sweep import Sweep, load_sweep
from tests.helpers import QUICKSTART
from tests.test_fuzz import examples, rarely
from tests.test_user_errors import error_line


@pytest.fixture(scope="module")
def model(tiny_run):
    return minbert.load(tiny_run[0])


def refused(fn, *parts) -> str:
    """fn() raises one MinbertError holding each of `parts`, on one line that prints (no lone surrogate in it)."""
    with pytest.raises(MinbertError) as e:
        fn()
    line = str(e.value)
    assert "\n" not in line and line.encode("utf-8")
    for p in parts:
        assert p in line, (p, line)
    return line


# 5. the API's arguments


@pytest.mark.parametrize("run_dir", [None, 3, b"runs/quickstart", ["runs/quickstart"]], ids=repr)
def test_load_refuses_a_run_dir_that_is_not_a_path(run_dir):
    refused(lambda: minbert.load(run_dir), "run_dir", repr(run_dir)[:20], "expected a path")


@pytest.mark.parametrize("run_dir", ["\ud800", "runs/\udfff/x"], ids=ascii)
def test_load_refuses_a_run_dir_no_file_name_can_hold(run_dir):
    """A lone surrogate cannot be a file name (nor be printed): refused as the argument, quoted with escapes."""
    refused(lambda: minbert.load(run_dir), "run_dir", "lone surrogate")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "cuda:99", 0, "CPU"], ids=repr)
def test_load_refuses_a_device_it_cannot_run_on(device, tiny_run):
    refused(lambda: minbert.load(tiny_run[0], device=device), "device", repr(device))


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_load_refuses_int8_on_a_gpu_before_the_model_loads(device, tiny_run, monkeypatch):
    """int8 is CPU-only: on a machine with CUDA, int8 there (or "auto", which picks it) is refused at load, not at
    the first prediction - and before any weights move to the GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    refused(lambda: minbert.load(tiny_run[0], device=device, precision="int8"), "precision int8", "CPU")


@pytest.mark.parametrize("task,size", [("sst", 2**62), ("quora", 10**30), ("sts", 2**63 - 1)])
def test_a_huge_batch_size_is_one_batch_of_all_inputs(model, task, size):
    inputs = ["a gorgeous, witty film", "a tedious mess"] if task == "sst" else [("a man", "a person")] * 2
    assert model.predict(task, inputs, batch_size=size) == model.predict(task, inputs, batch_size=64)


@pytest.mark.parametrize("size", [np.int64(2), np.int32(1), np.uint8(3)], ids=repr)
def test_a_numpy_integer_batch_size_is_a_whole_number(model, size):
    inputs = ["a gorgeous, witty film", "a tedious mess", "fine"]
    assert model.predict("sst", inputs, batch_size=size) == model.predict("sst", inputs, batch_size=int(size))
    assert torch.equal(model.embed(inputs, batch_size=size), model.embed(inputs, batch_size=int(size)))
    for wrong in (np.True_, True, np.float64(2.0)):  # still refused: a bool or a float is no count
        refused(lambda: model.predict("sst", inputs, batch_size=wrong), "batch_size", "whole number")


@pytest.mark.parametrize(
    "call,parts",
    [
        (lambda m: m.predict("sst", ["fine", "a \ud800 film"]), ["sst input 2", "character 3", "'\\ud800'"]),
        (lambda m: m.predict("quora", [("a", "b"), ("ok", "x\udcff")]), ["quora input 2 (sentence b)", "\\udcff"]),
        (lambda m: m.embed(["\udc80"]), ["embed input 1", "lone surrogate"]),
    ],
    ids=["sentence", "pair", "embed"],
)
def test_text_with_a_lone_surrogate_is_refused_naming_its_input(model, call, parts):
    refused(lambda: call(model), *parts)


# 6. sweep files read like configs


def sweep_file(d: Path, spec: dict, name: str = "s.yaml") -> Path:
    path = d / name
    path.write_text(yaml.safe_dump({"out": str(d / "o"), **spec}))
    return path


@pytest.mark.parametrize("variants", [["a", "b"], "a", 3])
def test_variants_that_are_not_a_mapping_are_one_line(variants, tmp_path):
    path = sweep_file(tmp_path, {"base": str(QUICKSTART), "variants": variants})
    refused(lambda: load_sweep(path), "variants must map each variant's name to its overrides")


@pytest.mark.parametrize("grid", [["lr"], "lr"])
def test_a_grid_that_is_not_a_mapping_is_one_line(grid, tmp_path):
    path = sweep_file(tmp_path, {"base": str(QUICKSTART), "grid": grid})
    refused(lambda: load_sweep(path), "grid must map each config key to its values")


@pytest.mark.parametrize(
    "spec,parts",
    [
        ({"overrides": "epochs=1"}, ["overrides must be a list", "[epochs=1]", "one string"]),
        ({"overrides": [{"epochs": 1}]}, ["overrides[0]", "not a key=value override"]),
        ({"variants": {"a": ["epochs=1", 2]}}, ["variants.a[1]: 2 is not a key=value override"]),
        ({"overrides": ["seed=3"]}, ["overrides[0]", "the sweep sets every run's seed"]),
    ],
)
def test_overrides_are_a_list_of_strings(spec, parts, tmp_path):
    path = sweep_file(tmp_path, {"base": str(QUICKSTART), **spec})
    refused(lambda: load_sweep(path), *parts)


def test_a_base_that_is_a_folder_says_to_name_the_yaml_file(tmp_path):
    (tmp_path / "configs").mkdir()
    for base in ("configs", str(tmp_path / "configs")):  # beside the sweep file, and absolute
        path = sweep_file(tmp_path, {"base": base})
        refused(lambda: load_sweep(path), "is a folder: name the YAML file")


@pytest.mark.parametrize(
    "spec,parts",
    [
        ({"base": 5}, ["base: 5 is not a path"]),
        ({"out": 5}, ["out: 5 is not a path"]),
        ({"out": ["o"]}, ["out: ['o'] is not a path"]),
        ({"budget": "false"}, ["budget: 'false' must be true or false"]),
        ({"variants": {"..": []}}, ["variant name '..' names a folder"]),
        ({"variants": {"a": {"published": {"sst": 0.5, "quora": 0.7, "sts": 0.6, "scale": ["x"]}}}}, ["scale"]),
        ({"search": {"trials": True, "params": {"lr": {"low": 1e-5, "high": 1e-4}}}}, ["search.trials: True"]),
    ],
    ids=["base-int", "out-int", "out-list", "budget-string", "variant-dotdot", "scale-list", "trials-bool"],
)
def test_a_sweep_key_of_the_wrong_type_is_one_line_naming_it(spec, parts, tmp_path):
    path = sweep_file(tmp_path, {"base": str(QUICKSTART), **spec})
    refused(lambda: load_sweep(path), *parts)
    assert not (tmp_path / "o").exists()


def test_a_grid_keeps_the_command_lines_overrides(tmp_path):
    """The grid's loop once reused the name of the command line's overrides: they were replaced by its last row."""
    path = sweep_file(tmp_path, {"base": str(QUICKSTART), "grid": {"lr": [1e-5, 2e-5]}})
    sweep = load_sweep(path, extra=["epochs=1"])
    assert sweep.overrides == ("epochs=1",)
    assert all(args[-4:-2] == ["epochs=1", f"lr={lr}"] for (_, _, _, args), lr in zip(sweep.runs(), [1e-5, 2e-5]))
    sweep = load_sweep(path, steps=4, extra=["epochs=2"])
    assert sweep.overrides == ("epochs=2",) and all(v[-1] == "steps_per_epoch=2" for v in sweep.variants.values())


SEARCH = {"trials": 1, "params": {"lr": {"low": 1e-5, "high": 1e-4, "log": True}}}


@pytest.mark.parametrize(
    "params,parts",
    [
        ({"lr": {"low": "small", "high": 1e-4}}, ["search.params.lr.low: 'small' is not a number"]),
        ({"lr": {"low": 1e-4, "high": 1e-5}}, ["search.params.lr: low 0.0001 must be below high 1e-05"]),
        ({"lr": {"low": 0, "high": 1e-4, "log": True}}, ["log: true needs low > 0"]),
        ({"head_lr_mult": {"choices": []}}, ["choices must be a non-empty list"]),
        ({"lrr": {"low": 1e-5, "high": 1e-4}}, ["search.params.lrr: lrr=1e-05 does not validate", "'lrr'"]),
        ({"tasks.sst.dropout": {"low": 0.5, "high": 1.5}}, ["search.params.tasks.sst.dropout: tasks.sst.dropout=1.5"]),
    ],
    ids=["low-text", "low-above-high", "log-from-0", "no-choices", "key-typo", "out-of-range"],
)
def test_a_bad_search_is_refused_before_its_journal_or_any_run(params, parts, tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(
        "minbert.sweep.subprocess.run", lambda cmd, **kw: trained.append(cmd) or CompletedProcess(cmd, 1)
    )
    path = sweep_file(tmp_path, {"base": str(QUICKSTART), "search": {"trials": 1, "params": params}})
    assert main(["sweep", str(path)]) == 2
    line = error_line(capsys.readouterr().err)
    assert all(p in line for p in parts), line
    assert not (tmp_path / "o").exists() and not trained  # no optuna.journal, no run folder, nothing trained


@pytest.mark.parametrize("metric", ["overal", "sst/accuracy", "sts/pearson"])
def test_a_search_metric_its_runs_do_not_report_is_refused_before_training(metric, tmp_path, capsys, monkeypatch):
    """The valid metrics are the base config's: its tasks' (a custom task's too) and overall - here sst and a custom
    task, so STS's is a typo as much as "overal"."""
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "custom_tasks": {
                    "mood": {"files": {"train": "m.jsonl", "dev": "m.jsonl"}, "num_labels": 2, "metric": "f1"}
                },
                "tasks": {"sst": {}, "mood": {"head": "linear"}},
            }
        )
    )
    path = sweep_file(tmp_path, {"base": str(base), "search": {**SEARCH, "metric": "mood/f1"}})
    assert load_sweep(path).search["metric"] == "mood/f1"
    trained = []
    monkeypatch.setattr(
        "minbert.sweep.subprocess.run", lambda cmd, **kw: trained.append(cmd) or CompletedProcess(cmd, 1)
    )
    path = sweep_file(tmp_path, {"base": str(base), "search": {**SEARCH, "metric": metric}})
    assert main(["sweep", str(path)]) == 2
    line = error_line(capsys.readouterr().err)
    assert f"search.metric {metric!r} is not a dev metric" in line
    assert sorted(line.split("valid: ")[1].split(", ")) == ["mood/f1", "overall", "sst/acc"]
    assert not (tmp_path / "o").exists() and not trained


# 7. export --int8 checks its packages before writing


def without_onnxruntime(monkeypatch) -> list:
    """As if onnxruntime were not installed (every module of it), with the fp32 writer replaced by a spy: the list
    of files it was asked to write."""
    for name in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")] + ["onnxruntime"]:
        monkeypatch.setitem(sys.modules, name, None)
    written = []

    def spy(graph, inputs, path, output):
        written.append(path)
        path.write_bytes(b"fp32")
        return path

    monkeypatch.setattr("minbert.export.onnx_files.onnx_file", spy)
    return written


def test_export_int8_without_onnxruntime_is_refused_before_any_file(model, tmp_path, monkeypatch):
    from minbert.export import export

    written = without_onnxruntime(monkeypatch)
    refused(lambda: export(model.run, tmp_path / "onnx", "onnx", int8=True), "--int8 needs", "onnxruntime")
    assert not written and list(tmp_path.iterdir()) == []


def test_cli_export_int8_without_onnxruntime_is_one_line_before_any_file(tiny_run, tmp_path, monkeypatch, capsys):
    written = without_onnxruntime(monkeypatch)
    assert main(["export", str(tiny_run[0]), str(tmp_path / "onnx"), "--format", "onnx", "--int8"]) == 2
    assert "--int8 needs" in error_line(capsys.readouterr().err)
    assert not written and list(tmp_path.iterdir()) == []


# Hypothesis: generated sweep files


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """About three draws in four from `good`: one wrong value among right ones is the common mistake (and a run of
    right ones reaches the checks behind the first)."""
    return rarely(4).flatmap(lambda wrong: bad if wrong else good)


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(-3, 3), max_size=2),
    st.dictionaries(st.sampled_from(["a", "low", "x"]), st.integers(-2, 2), max_size=2),
)
GOOD_OVERRIDES = st.lists(st.sampled_from(["epochs=1", "lr=2e-5", "tasks.sst.dropout=0.3"]), max_size=2)
OVERRIDE = st.sampled_from(["epochs=1", "combiner=pcgrad", "nope=1", "epochs=-1", "seed=3", "out=x", "e", "lr=", "=1",
                            "epochs=[1"])  # fmt: skip
OVERRIDES = mostly(GOOD_OVERRIDES, st.lists(OVERRIDE, max_size=3) | OVERRIDE | st.lists(JUNK, min_size=1, max_size=2))
NAME = mostly(st.sampled_from(["a", "b", "base"]), st.sampled_from(["..", ".", "a b", "x/y", "", "é", 3, "\x07"]))
PUBLISHED = st.fixed_dictionaries(
    {"sst": st.floats(-2, 2) | JUNK, "quora": st.just(0.7), "sts": st.just(0.6)},
    optional={"scale": st.sampled_from(["cs224n", "mean", "other"]) | JUNK, "overall": JUNK},
)
VARIANT = OVERRIDES | st.fixed_dictionaries({}, optional={"overrides": OVERRIDES, "published": PUBLISHED | JUNK})
NUMBER = st.sampled_from([0, 1, 2, -1, 1e-5, 1e-4, 0.5, 1.5, 10**9, float("inf"), float("nan"), "small", None, True])
PARAM = mostly(
    st.sampled_from(
        [{"low": 1e-5, "high": 1e-4, "log": True}, {"low": 1, "high": 3, "int": True}, {"choices": [1, 3]}]
    ),
    st.one_of(
        st.fixed_dictionaries(
            {"low": NUMBER, "high": NUMBER}, optional={"log": st.booleans() | JUNK, "int": st.booleans() | JUNK}
        ),
        st.fixed_dictionaries({"choices": st.lists(NUMBER | st.sampled_from(["pcgrad", "sum"]), max_size=3) | JUNK}),
        st.fixed_dictionaries({"choices": st.just([1, 3])}, optional={"low": st.just(1)}),
        JUNK,
    ),
)
SEARCH_SPEC = st.fixed_dictionaries(
    {
        "params": mostly(
            st.dictionaries(
                mostly(
                    st.sampled_from(["lr", "epochs", "head_lr_mult"]), st.sampled_from(["combiner", "lrr", "seed", ""])
                ),
                PARAM,
                min_size=1,
                max_size=2,
            ),
            st.just({}) | JUNK,
        )
    },
    optional={
        "trials": mostly(st.sampled_from([1, 3]), st.sampled_from([0, -1, True, "3", 2**70, 2.5])),
        "metric": mostly(
            st.sampled_from(["overall", "sst/acc", "sts/pearson"]), st.sampled_from(["overal", "mood/f1", 3, None])
        ),
    },
)
KEYS = {
    "base": st.sampled_from(["QUICKSTART", "q.yaml", "folder", "missing.yaml", "", 5, None, ["q.yaml"]]),
    "budget": mostly(st.just(False), st.just(True) | JUNK),
    "overrides": OVERRIDES,
    "variants": mostly(st.dictionaries(NAME, VARIANT, max_size=3), st.lists(NAME, max_size=2) | JUNK),
    "grid": mostly(st.dictionaries(st.sampled_from(["lr", "tasks.sst.dropout"]), st.just([1e-5, 0.2]), max_size=2),
                   st.dictionaries(st.sampled_from(["lr", "epochs", "seed", "nope", ""]),
                                   st.lists(NUMBER | JUNK, max_size=3) | JUNK, max_size=2) | JUNK),
    "search": mostly(SEARCH_SPEC, JUNK),
    "seeds": mostly(st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True),
                    st.lists(st.integers(-2, 2**33) | JUNK, max_size=3) | JUNK),
    "out": mostly(st.sampled_from(["o", "runs/o"]), st.sampled_from(["", "file.txt", "file.txt/o"]) | JUNK),
    "report": mostly(st.just("results"), st.sampled_from(["a b", "", "x/y"]) | JUNK),
    "colour": JUNK,
}  # fmt: skip


@st.composite
def sweep_specs(draw) -> dict:
    keys = draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=5, unique=True))
    spec = {k: draw(KEYS[k]) for k in keys if k != "colour" or draw(rarely(4))}
    if "base" not in spec or not draw(rarely(4)):  # mostly a base that loads: the other keys are then read
        spec["base"] = "QUICKSTART"
    if draw(rarely(3)):  # a search file
        spec = {k: v for k, v in spec.items() if k not in ("variants", "grid")} | {"search": draw(SEARCH_SPEC)}
    return spec


@settings(max_examples=examples(150))
@given(sweep_specs(), st.sampled_from([None, 4]), st.sampled_from([(), ("epochs=1",), ("seed=2",)]))
def test_a_generated_sweep_file_loads_or_is_one_line_and_makes_nothing(tmp_path_factory, spec, steps, extra):
    d = tmp_path_factory.mktemp("sweep")
    (d / "q.yaml").write_bytes(QUICKSTART.read_bytes())
    (d / "folder").mkdir()
    (d / "file.txt").write_text("x")
    if spec.get("base") == "QUICKSTART":
        spec["base"] = str(QUICKSTART)
    if isinstance(spec.get("out"), str) and spec["out"]:
        spec["out"] = str(d / spec["out"])  # inside the test's folder, whatever it names
    path = d / "s.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    before = sorted(d.rglob("*"))
    try:
        sweep = load_sweep(path, steps=steps, extra=list(extra))
    except MinbertError as e:
        assert "\n" not in str(e) and str(e)
        event("refused")
    else:
        assert isinstance(sweep, Sweep) and sweep.variants and sweep.seeds
        assert all(isinstance(o, str) for v in sweep.variants.values() for o in (*sweep.overrides, *v))
        if sweep.search is not None:
            assert set(sweep.search) == {"trials", "metric", "params"} and sweep.search["trials"] >= 1
        event("search" if sweep.search else "loaded")
    assert sorted(d.rglob("*")) == before  # no folder, no journal, no file


# Hypothesis: generated API arguments

DEVICES = mostly(
    st.sampled_from([None, "cpu", "auto", torch.device("cpu")]),
    st.sampled_from(["gpu", "cuda:x", "cuda:", "cuda:²", "cuda:7", "", "CPU", 0, b"cpu"]),
)
PRECISIONS = mostly(st.sampled_from([None, "fp32", "int8"]), st.sampled_from(["fp64", "", 8, ["fp32"]]))
BATCH = mostly(
    st.sampled_from([1, 2, 64, 2**62, 10**30, np.int64(2), np.uint8(3)]),
    st.sampled_from(
        [0, -1, np.int32(0), np.int16(-2), np.float32(2), np.float64(2.0), 2.0, True, False, np.True_, "2", None, 1j]
    ),
)
TEXT = mostly(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8),
    st.text(max_size=4) | st.sampled_from(["\ud800", "a\udcffb"]),
)
RUN_DIRS = mostly(st.sampled_from(["str", "path"]), st.sampled_from([None, 3, b"run", "", "missing", "\ud800",
                                                                      "a\x00b"]))  # fmt: skip


@pytest.fixture(scope="module")
def loads_once():
    """minbert.load with each distinct (run, device, precision) loaded once: every argument still goes through the
    real checks, the weights are read once per combination (what keeps the test within its time)."""
    from minbert import api
    from minbert.runs import pick_device

    real, cache = api.load_run, {}

    def load_run(run, device=None, cfg=None, precision=None):
        key = (Path(run).resolve(), str(pick_device(device or cfg.device)), precision or "")
        if key not in cache:
            cache[key] = real(run, device=device, cfg=cfg, precision=precision)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "load_run", load_run)
        yield


@settings(max_examples=examples(60))
@given(
    RUN_DIRS,
    DEVICES,
    PRECISIONS,
    st.sampled_from(["sst", "quora", "embed"]),
    BATCH,
    st.lists(TEXT, max_size=3),
)
def test_generated_api_arguments_give_a_result_or_a_minbert_error(
    tiny_run, loads_once, run_dir, device, precision, task, batch_size, texts
):
    run = {"str": str(tiny_run[0]), "path": tiny_run[0], "missing": str(tiny_run[0] / "nope")}.get(run_dir, run_dir)
    try:
        m = minbert.load(run, device=device, precision=precision)
        if task == "embed":
            out = m.embed(texts, batch_size=batch_size)
        else:
            out = m.predict(task, texts if task == "sst" else [(t, t) for t in texts], batch_size=batch_size)
    except MinbertError as e:
        assert "\n" not in str(e) and str(e).encode("utf-8")
        event("refused")
        return
    event("predicted")
    assert len(out) == len(texts)


def test_cpu_0_is_the_cpu_and_an_empty_only_is_refused(tmp_path, capsys):
    """Bad-input round 2: device="cpu:0" (torch's name for the CPU) was refused; `--only ''` ran every variant."""
    from minbert.api import check_device
    from minbert.cli import main

    assert check_device("cpu:0") == "cpu"
    with pytest.raises(MinbertError, match="cpu:1"):
        check_device("cpu:1")
    (tmp_path / "s.yaml").write_text(f"base: {QUICKSTART}\nvariants: {{a: [], b: []}}\nout: {tmp_path / 'o'}\n")
    assert main(["sweep", str(tmp_path / "s.yaml"), "--only", "", "--dry-run"]) == 2
    assert "--only: names no variant" in capsys.readouterr().err


def test_a_base_that_is_a_sweep_file_is_named(tmp_path):
    """base: the sweep file itself (or another sweep) was read as a train config: 'unknown config key base'."""
    path = sweep_file(tmp_path, {"base": "s.yaml", "variants": {"a": []}})
    refused(lambda: load_sweep(path), "base 's.yaml' is a sweep file", "not a train config")
    other = sweep_file(tmp_path, {"base": str(QUICKSTART), "grid": {"lr": [1e-5]}}, name="other.yaml")
    path = sweep_file(tmp_path, {"base": str(other), "variants": {"a": []}})
    refused(lambda: load_sweep(path), "other.yaml", "is a sweep file")


@pytest.mark.parametrize("values", [["D/x", "D/x/y"], ["a b", "a\\b"], ["50%", "50%25"]], ids=["slash", "space", "pct"])
def test_grid_values_name_one_folder_each(values, tmp_path):
    """A grid value with a slash named nested folders (data_dir=D/x held data_dir=D/x/y's runs); each value is one
    folder of OUT, all distinct, and the run still gets the value as given."""
    path = sweep_file(tmp_path, {"base": str(QUICKSTART), "grid": {"checkpoint": values}})
    sweep = load_sweep(path)
    runs = [(run, args) for _, _, run, args in sweep.runs()]
    assert len({run for run, _ in runs}) == len(values)
    assert all(run.parent.parent == tmp_path / "o" for run, _ in runs)
    assert [a for _, args in runs for a in args if a.startswith("checkpoint=")] == [f"checkpoint={v}" for v in values]


@pytest.mark.parametrize("what", ["file", "notes"])
def test_a_run_folder_that_is_not_a_run_is_refused_before_any_run(what, tmp_path, capsys):
    """OUT/a/seed1 a file (the dry run said 'new', a real one crashed in rmtree) or a folder of other files (which
    the sweep would have deleted as a start that died)."""
    seed = tmp_path / "o" / "a" / "seed1"
    if what == "file":
        seed.parent.mkdir(parents=True)
        seed.write_text("x")
    else:
        seed.mkdir(parents=True)
        (seed / "notes.txt").write_text("mine")
    path = sweep_file(tmp_path, {"base": str(QUICKSTART), "variants": {"a": []}, "seeds": [1]})
    for argv in (["sweep", str(path), "--dry-run"], ["sweep", str(path)]):
        assert main(argv) == 2
        line = error_line(capsys.readouterr().err)
        assert "seed1" in line and "move it away" in line, line
    assert (seed.read_text() if what == "file" else (seed / "notes.txt").read_text()) in ("x", "mine")


def test_a_start_that_died_before_its_first_checkpoint_is_still_restarted(tmp_path):
    from minbert.sweep import _restartable

    seed = tmp_path / "seed1"
    seed.mkdir()
    assert _restartable(seed)
    (seed / "config.yaml").write_text("x: 1\n")
    (seed / "metrics.jsonl").write_text("")
    assert _restartable(seed)
    (seed / "notes.txt").write_text("mine")
    assert not _restartable(seed)
