"""Property-based tests (Hypothesis) for the promise "bad input gets one clear line and loses nothing": generated
configs (keys and values over the real dataclass fields and technique arguments), data files (bytes, quoting,
labels, line endings, lengths), damage to a run folder, and Python API inputs. For each: a MinbertError (on the
command line: exit 2 with exactly one `minbert: error:` line), or success with a correct result; never a traceback,
never a changed pre-existing file.

CI runs a fixed, derandomized set of examples (`ci` profile, tests/conftest.py); `MINBERT_FUZZ=long` runs many more:

    MINBERT_FUZZ=long python -m pytest tests/test_fuzz.py -q -p no:cacheprovider
"""

import dataclasses
import json
import os
import shutil
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from minbert.cli import main
from minbert.errors import MinbertError
from tests.helpers import QUICKSTART, TINY_BERT

SCALE = 100 if os.environ.get("MINBERT_FUZZ") == "long" else 1


def examples(n: int, most: int = 10**9) -> int:
    """n in CI; 100 n in the long profile, at most `most` (an example of the run-folder test loads a checkpoint)."""
    return min(n * SCALE, max(n, most))


def rarely(n: int) -> st.SearchStrategy:
    """True about once in `n` draws (Hypothesis leans to 0 when drawing integers, so not `integers(0, n) == 0`)."""
    return st.sampled_from([False] * (n - 1) + [True])


# -- configs --------------------------------------------------------------------------------------------------------


def _field_paths() -> dict[str, type]:
    """Every dotted config key a user can write, with its annotated type; technique arguments included."""
    from minbert.combiners import COMBINERS
    from minbert.losses import LOSSES
    from minbert.lr_schedules import UPDATERS
    from minbert.multitask.config import EarlyStopping, PalsConfig, TaskConfig, TrainConfig
    from minbert.regularizers import REGULARIZERS

    def fields(cls, prefix=""):
        hints = typing.get_type_hints(cls, include_extras=True)
        return {prefix + f.name: hints[f.name] for f in dataclasses.fields(cls)}

    skip = {"checkpoint", "data_dir", "out", "custom_tasks", "budget", "tasks", "pals", "early_stopping"}
    paths = {k: v for k, v in fields(TrainConfig).items() if k not in skip}
    for task in ("sst", "quora", "sts"):
        paths.update(fields(TaskConfig, f"tasks.{task}."))
    paths.update(fields(PalsConfig, "pals."))
    paths.update(fields(EarlyStopping, "early_stopping."))
    lr_schedules = {k: c for k, c in UPDATERS.items() if not c.per_task}
    for key, registry in (("regularizers", REGULARIZERS), ("lr_schedule_args", lr_schedules)):
        for name, fn in registry.items():
            for arg, tp in typing.get_type_hints(fn.__init__, include_extras=True).items():
                if arg != "return":
                    paths[f"{key}.{name}.{arg}" if key == "regularizers" else f"{key}.{arg}"] = tp
    for fn in COMBINERS.values():
        for arg, tp in typing.get_type_hints(fn.__init__, include_extras=True).items():
            if arg != "return":
                paths[f"combiner_args.{arg}"] = tp
    for name, fn in LOSSES.items():
        for arg, tp in typing.get_type_hints(fn.__init__, include_extras=True).items():
            if arg != "return":
                paths[f"tasks.sts.loss_args.{arg}"] = tp
    return paths


PATHS = _field_paths()
NAMES = "sst quora sts linear cosine cross concat ce bce mse mnrl smart bregman pcgrad gradvac annealed plateau".split()
NAMES += ["warmup_linear", "bf16", "mean", "tensorboard"]


REGISTRY_FIELDS = {
    "schedule": "annealed round_robin proportional sequential",
    "combiner": "sum pcgrad gradvac",
    "lr_schedule": "constant warmup_linear plateau",
    "head": "linear cross concat cosine",
    "loss": "ce bce mse cosine_mse mnrl cosine_embedding",
    "metric": "overall sst/acc quora/acc sts/pearson",
    "pooling": "mean cls pooler",
}


def valid(key: str, tp) -> st.SearchStrategy:
    """A value a user would plausibly mean for this field: its type, inside its declared range."""
    from minbert.config import Range

    last = key.rsplit(".", 1)[-1]
    if last in REGISTRY_FIELDS:
        return st.sampled_from(REGISTRY_FIELDS[last].split())
    if typing.get_origin(tp) is typing.Annotated:
        base, r = typing.get_args(tp)[0], next((m for m in tp.__metadata__ if isinstance(m, Range)), Range())
        lo, hi = max(r.lo, -10.0), min(r.hi, max(r.lo, 0) + 64)
        if base is int:
            return st.integers(int(lo), int(hi)).filter(r.holds)
        return st.floats(lo, hi, exclude_min=r.lo_open and lo == r.lo, exclude_max=r.hi_open and hi == r.hi)
    if tp is bool:
        return st.booleans()
    if typing.get_origin(tp) is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if tp is int:
        return st.integers(0, 64)
    if tp is float:
        return st.floats(0, 2)
    return st.sampled_from(NAMES)


def _edge(tp) -> st.SearchStrategy:
    """Values at and just past a field's declared range, of its type."""
    from minbert.config import Range

    if typing.get_origin(tp) is typing.Annotated:
        base, ranges = typing.get_args(tp)[0], [r for r in tp.__metadata__ if isinstance(r, Range)]
        points = [x for r in ranges for x in (r.lo, r.hi) if abs(x) < 1e12]
        near = [p + d for p in points for d in (-1, -0.5, 0, 0.5, 1)]
        if base is int:
            return st.sampled_from([int(x) for x in near] or [0])
        return st.sampled_from(near or [0.0])
    return valid("", tp)


ANYTHING = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=6)
    | st.sampled_from(NAMES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip


def values(key: str, tp) -> st.SearchStrategy:
    """Mostly plausible values, some at the range's edges, some of any type or shape."""
    return st.one_of(valid(key, tp), valid(key, tp), valid(key, tp), _edge(tp), ANYTHING)


@st.composite
def configs(draw):
    data: dict = {"epochs": 1}
    for key in draw(st.lists(st.sampled_from(sorted(PATHS)), min_size=1, max_size=5, unique=True)):
        node, parts = data, key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[parts[-1]] = draw(values(key, PATHS[key]))
    if draw(rarely(6)):  # sometimes a wrong key or a wrong shape
        data[draw(st.sampled_from(["colour", "tasks", "pals", "regularizers", "lr"]))] = draw(ANYTHING)
    return data


def _builds(cfg) -> None:
    """What training builds from an accepted config, on a tiny random encoder: heads, PALs, losses, techniques, the
    epoch plans. Any exception here is an accepted config that would crash a run."""
    from minbert.model import BertModel
    from minbert.model.multitask import MultitaskModel
    from minbert.multitask.techniques import Techniques

    model = MultitaskModel(BertModel(TINY_BERT), {n: cfg.task(n) for n in cfg.tasks}, cfg.pals)
    model.param_groups(cfg.lr, cfg.head_lr_mult, cfg.layer_lr_decay)
    tech = Techniques(cfg, model, torch.device("cpu"))
    sizes = {n: 40 for n in cfg.tasks}
    per_pass = {n: -(-40 // cfg.task(n).batch_size) for n in cfg.tasks}
    for e in (1, cfg.epochs):
        tech.sampler(sizes, per_pass, e, cfg.epochs, min(cfg.steps_per_epoch, 50), cfg.seed)


@settings(max_examples=examples(120))
@given(configs())
def test_a_generated_config_is_refused_in_one_line_or_builds(data):
    from minbert.config import from_dict
    from minbert.multitask.config import TrainConfig

    base = {"tasks": {"sst": {}, "quora": {"head": "cross", "loss": "bce"}, "sts": {"head": "cosine"}}}
    tasks = data.get("tasks", {})
    merged = {**base, **data, "tasks": {**base["tasks"], **tasks} if isinstance(tasks, dict) else tasks}
    try:
        cfg = from_dict(TrainConfig, merged).validate()
    except MinbertError as e:
        assert "\n" not in str(e).strip() and str(e)
        event("refused")
        return
    event("accepted, built")
    _builds(cfg)


@st.composite
def override_words(draw):
    """`key=value` words as typed on a command line: mostly real keys with plausible values, some not."""
    import yaml

    if not draw(rarely(10)):
        key = draw(st.sampled_from(sorted(PATHS)))
        value = draw(values(key, PATHS[key]))
        raw = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
    else:
        key = draw(st.text(st.characters(codec="ascii"), max_size=8))
        raw = draw(st.sampled_from(["1", "-1", ".nan", ".inf", "{a: 1}", "[1, 2]", "{", "[", "x", "~", "1e999"]))
    if draw(rarely(10)):
        raw = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8))
    return f"{key}={raw}"


@settings(max_examples=examples(60))
@given(st.lists(override_words(), min_size=1, max_size=3))
def test_generated_overrides_on_the_command_line_are_one_line_or_accepted(tmp_path_factory, words):
    """Through the CLI's boundary: `minbert sweep --dry-run` checks every run's config without training."""
    assume(all("\x00" not in w for w in words))
    d = tmp_path_factory.mktemp("sweep")
    (d / "s.yaml").write_text(json.dumps({"base": str(QUICKSTART), "variants": {"v": words}, "out": str(d / "o")}))
    import io
    from contextlib import redirect_stderr, redirect_stdout

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = main(["sweep", str(d / "s.yaml"), "--dry-run"])
    lines = [x for x in err.getvalue().splitlines() if x.startswith("minbert: error:")]
    assert "Traceback" not in err.getvalue()
    assert (code == 0 and not lines) or (code == 2 and len(lines) == 1), (code, err.getvalue())
    assert not (d / "o").exists()
    event(f"exit {code}")


# -- data files -----------------------------------------------------------------------------------------------------

FIELD = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12) | st.sampled_from(
    ['"', '""', '"quoted"', "a\tb", "a\nb", "  ", "", "x" * 300, "'", "\r"]
)
LABEL = st.sampled_from(["0", "1", "2", "3", "4", "5", "2.5", "-1", "6", "inf", "-inf", "nan", "1e400", "", "one",
                         "0.0", "1.0", " 3 ", "4.2"])  # fmt: skip


GOOD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1,
                    max_size=12).filter(str.strip)  # fmt: skip


@st.composite
def data_files(draw):
    """Mostly well-formed CS224N files (the kind is drawn by the test), with a few rows or bytes damaged."""
    kind = draw(st.sampled_from(["sst", "sts", "sst-test"]))
    header = {"sst": "\tid\tsentence\tsentiment", "sst-test": "\tid\tsentence",
              "sts": "\tid\tsentence1\tsentence2\tsimilarity"}[kind]  # fmt: skip
    if draw(rarely(10)):
        header = draw(
            st.sampled_from(["id\tsentence\tsentiment", "\tid\ttext\tlabel", "", "\tid\tsentence\tsentiment"])
        )
    rows = []
    for i in range(draw(st.integers(1, 6))):
        texts = [draw(GOOD_TEXT) for _ in range(2 if kind == "sts" else 1)]
        good = {"sst": st.integers(0, 4).map(str), "sts": st.floats(0, 5).map(lambda x: f"{x:.2f}")}.get(kind)
        fields = [str(i), f"id{i}", *texts] + ([draw(good)] if good is not None else [])
        if draw(rarely(4)):  # damage this row
            at = draw(st.integers(1, len(fields) - 1))
            how = draw(st.sampled_from(["field", "label", "drop", "extra"]))
            if how == "field":
                fields[at] = draw(FIELD)
            elif how == "label" and good is not None:
                fields[-1] = draw(LABEL)
            elif how == "drop":
                del fields[at]
            else:
                fields.append(draw(FIELD))
        rows.append("\t".join(fields))
    end = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    raw = (end.join([header, *rows]) + draw(st.sampled_from(["", end]))).encode()
    if draw(rarely(6)):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    if draw(rarely(6)):
        raw = raw[: draw(st.integers(0, len(raw)))]  # cut off
    return kind, raw


@settings(max_examples=examples(150))
@given(data_files(), st.booleans())
def test_a_generated_data_file_is_read_correctly_or_refused_in_one_line(tmp_path_factory, file, strict):
    import math

    from minbert.data import DATASETS

    SST, STS = DATASETS["sst"], DATASETS["sts"]
    from minbert.data.readers import read_examples

    kind, raw = file
    path = tmp_path_factory.mktemp("data") / "f.csv"
    path.write_bytes(raw)
    spec, cols = (STS, ("sentence1", "sentence2")) if kind == "sts" else (SST, ("sentence",))
    label = None if kind == "sst-test" else spec.label
    try:
        got = read_examples(path, cols, label, strict)
    except MinbertError as e:
        assert "\n" not in str(e) and "f.csv" in str(e)
        event("refused")
        return
    event("read")
    assert got and path.read_bytes() == raw
    for e in got:
        assert e.id and len(e.texts) == len(cols)
        if label is not None:
            assert isinstance(e.label, (int, float)) and math.isfinite(e.label) and label.check(e.label)
            assert all(e.texts)


@settings(max_examples=examples(80))
@given(
    st.sampled_from(["csv", "tsv", "jsonl"]),
    st.lists(
        st.fixed_dictionaries({"text": FIELD | st.none() | st.integers(), "label": LABEL | st.none()}), max_size=5
    ),
    st.booleans(),
)
def test_a_generated_custom_task_file_is_read_correctly_or_refused(tmp_path_factory, fmt, rows, mangle):
    import csv
    import io
    import math

    from minbert.data.readers import LabelSpec, float_label, read_table

    path = tmp_path_factory.mktemp("custom") / f"t.{fmt}"
    if fmt == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, ["text", "label"], delimiter="," if fmt == "csv" else "\t")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    if mangle:  # a quote lost or a stray one: what hand-edited files have
        text = text.replace('"', "", 1) if '"' in text else text.replace(",", ',"', 1)
    path.write_text(text)
    try:
        got = read_table(path, "auto", ("text",), LabelSpec("label", float_label, 0, 5), "")
    except MinbertError as e:
        assert "\n" not in str(e) and "t." + fmt in str(e)
        event("refused")
        return
    event("read")
    for e in got:
        assert e.texts[0] and math.isfinite(e.label) and 0 <= e.label <= 5


# -- run folders ----------------------------------------------------------------------------------------------------

SMALL = ["config.yaml", "summary.json", "last.json", "best.json", "metrics.jsonl"]


@pytest.fixture(scope="module")
def damaged_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run whose files are damaged and restored by each example: the small files and the best
    checkpoints' weights are private copies (what is damaged); the rest are hard links to the tiny run's."""
    run = tmp_path_factory.mktemp("fuzzrun") / "run"
    shutil.copytree(tiny_run[0], run, copy_function=os.link, ignore=shutil.ignore_patterns("plots", "tensorboard"))
    for f in run.rglob("*"):  # private copies, so damaging them cannot touch the original
        if f.is_file() and (f.suffix != ".safetensors" or f.match("best-*/model.safetensors")):
            data = f.read_bytes()
            f.unlink()
            f.write_bytes(data)
    return run


WEIGHTS = "checkpoints/best-*/model.safetensors"


@st.composite
def damage(draw, run: Path):
    files = SMALL + [str(p.relative_to(run)) for p in sorted(run.glob("checkpoints/*/state.json"))]
    weights = [str(p.relative_to(run)) for p in sorted(run.glob(WEIGHTS))]
    name = draw(st.sampled_from(files + weights))
    kinds = ["truncate", "flip"] if name in weights else ["truncate", "flip", "replace", "delete", "emptied"]
    kind = draw(st.sampled_from(kinds))
    size = (run / name).stat().st_size if (run / name).exists() else 0
    cut = draw(st.integers(0, max(size - 1, 0)) | st.integers(0, min(size, 20000)))  # the header is in front
    junk = draw(st.sampled_from([b"", b"[]", b"{}", b"null", b"\xff\xfe", b'{"dev": "x"}', b"- a\n- b\n",
                                 b'{"folder": 3, "step": "x"}', b"name: x\nname: y\n"]))  # fmt: skip
    return name, kind, cut, junk


def _apply(run: Path, name: str, kind: str, cut: int, junk: bytes):
    """Damage one file; returns how to undo it for a checkpoint's weights (the small files are restored whole)."""
    path = run / name
    if path.suffix == ".safetensors":
        with open(path, "r+b") as f:
            f.seek(cut)
            if kind == "flip":
                byte = f.read(1)
                f.seek(cut)
                f.write(bytes([byte[0] ^ 0x5A]))
                return lambda: _write_at(path, cut, byte)
            tail = f.read()
            f.truncate(cut)
            return lambda: _write_at(path, cut, tail)
    if kind == "delete":
        path.unlink(missing_ok=True)
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[:cut])
    elif kind == "flip" and path.exists():
        data = bytearray(path.read_bytes())
        if data:
            data[min(cut, len(data) - 1)] ^= 0x5A
        path.write_bytes(bytes(data))
    elif kind == "replace":
        path.write_bytes(junk)
    else:
        path.write_bytes(b"")
    return lambda: None


def _write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@settings(max_examples=examples(12, most=400))
@given(st.data())
def test_a_damaged_run_folder_is_one_line_or_works(damaged_run, tmp_path_factory, capsys, data):
    run = damaged_run
    saved = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".safetensors"}
    name, kind, cut, junk = data.draw(damage(run))
    command = data.draw(st.sampled_from(["predict", "compare", "ensemble"]))
    out = tmp_path_factory.mktemp("out")
    undo = lambda: None  # noqa: E731
    try:
        undo = _apply(run, name, kind, cut, junk)
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".safetensors"}
        weights = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run.glob("checkpoints/*/*.safetensors")}
        (out / "in.txt").write_text("a fine film\na dull one\n")
        argv = {
            "predict": ["predict", str(run), "--task", "sst", "--input", str(out / "in.txt")],
            "compare": ["compare", str(run), "--chart", str(out / "c.png")],
            "ensemble": ["ensemble", str(run), "--out", str(out / "ens")],
        }[command]
        code = main(argv)
        got = capsys.readouterr()
        lines = [x for x in got.err.splitlines() if x.startswith("minbert: error:")]
        assert "Traceback" not in got.err
        assert (code == 0 and not lines) or (code == 2 and len(lines) == 1), (name, kind, code, got.err)
        why = (
            lines[0].replace(str(run), "RUN").replace(str(out), "OUT")[len("minbert: error: ") :][:70] if lines else ""
        )
        event(f"{command} exit {code}" + (f" ({name} {kind}): {why}" if code else ""))
        if code == 0 and command == "predict":
            preds = [json.loads(x) for x in got.out.splitlines()]
            assert len(preds) == 2 and all(0 <= p["label"] <= 4 for p in preds)
        if code == 2 and command == "ensemble":
            assert not (out / "ens").exists()
        after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".safetensors"}
        changed = [str(p) for p in before if p.exists() and after.get(p) != before[p]]
        assert not changed or all(p.endswith(("last.json", "best.json")) for p in changed), changed  # rebuilt
        assert weights == {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in weights}  # no weights written
    finally:
        undo()
        for p in list(run.rglob("*")):
            if p.is_file() and p.suffix != ".safetensors" and p not in saved:
                p.unlink()
        for p, b in saved.items():
            p.write_bytes(b)


# -- the Python API -------------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
ITEM = TEXT | st.none() | st.integers() | st.tuples(TEXT, TEXT) | st.tuples(TEXT) | st.lists(TEXT, max_size=3)


@pytest.fixture(scope="module")
def model(tiny_run):
    import minbert

    return minbert.load(tiny_run[0])


@settings(max_examples=examples(100))
@given(
    st.sampled_from(["sst", "quora", "sts", "embed", "SST", ""]),
    st.lists(TEXT, max_size=4) | st.lists(st.tuples(TEXT, TEXT), max_size=4) | TEXT | st.tuples(TEXT, TEXT)
    | st.lists(ITEM, max_size=4) | st.none() | st.integers() | st.binary(max_size=4)
    | st.dictionaries(TEXT, TEXT, max_size=2),
    st.sampled_from([64, 1, 2, 64, 3, 0, -1, 2.5, True, "8"]),
)  # fmt: skip
def test_generated_api_inputs_give_one_result_each_or_a_minbert_error(model, task, inputs, batch_size):
    from minbert.api import as_inputs
    from minbert.tasks import TASKS

    try:
        if task == "embed":
            out = model.embed(inputs, batch_size=batch_size)
        else:
            out = model.predict(task, inputs, batch_size=batch_size)
    except MinbertError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("predicted")
    pair = task != "embed" and TASKS[task].pair
    expected = len(as_inputs(inputs, pair, task))
    assert len(out) == expected
    if task == "embed":
        assert out.shape[1] == model.run.model.bert.config.hidden_size and torch.isfinite(out).all()
    elif task == "sts":
        assert all(set(o) == {"score"} for o in out)
    else:
        assert all(0 <= o["label"] < (5 if task == "sst" else 2) for o in out)
