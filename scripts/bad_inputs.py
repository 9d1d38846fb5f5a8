"""Issue 41's fresh round of bad input: 110+ cases of our own making, beyond the test suite, run against the CLI and
the Python API, each classified by what it did.

    MINBERT_DATA=/work/shared/data taskset -c 1 python scripts/bad_inputs.py [--only SUBSTRING] [--jobs 1]
                                                                             [--subprocess] [--keep DIR]

The promise under test: bad input gives ONE line `minbert: error: ...` (what went wrong, where, what to do), exit
status 2, no traceback, and every file the user had is left byte for byte as it was; for the API one
`minbert.errors.MinbertError` with a one-line message. Each case says what it expects:

- "error": a one-line refusal whose line names the offending key, file or value (the case's `parts`);
- "ok": the command or call succeeds, and the case's own check says what "right" means and verifies it;
- "either": a one-line refusal, or success that passes the case's check.

Outcomes: `one-line` (exit 2, exactly one error line - `minbert: error:`, or argparse's `minbert CMD: error:` for a
malformed flag -, no "Traceback", every pre-existing file in the case's folder unchanged), `ok` (succeeded and the
check passed); failures: `traceback` (a traceback, or an exception other than MinbertError from the API),
`silent-wrong` (exit 0 but a wrong result or ignored input, as the case's check defines it), `unclear` (an error line
that does not name what the case's `parts` say it must, or more or fewer than one error line), `lost-work` (a file
that was in the case's folder before is changed or gone), `leftover` (a refusal that left new files or folders
behind: outputs are all or nothing), `wrong-refusal` (valid input refused), `hang` (past the case's time limit).

Speed: every case runs in a child process. By default the child is forked from this script after it has imported
minbert (and torch), then calls `minbert.cli.main(argv)` exactly as `python -m minbert` does - its stdout and stderr
are the child's file descriptors, an uncaught exception prints its traceback and exits 1 - which saves the 2-6 s of
interpreter and torch start-up per case. `--subprocess` runs each CLI case as a real `python -m minbert ...`
instead (slower; the same classification). Cases that read stdin always use a real subprocess.

Fixtures are built once per run under a temporary folder: a random 2-layer, 32-wide encoder with the embedded
checkpoint's vocabulary (as tests/conftest.py's `tiny_encoder`), a finished 3-task tiny run (tests/helpers.py's
TINY), a finished SST-only run, and a finished LoRA run; a case that damages a run works on its own copy.

Writes docs/study/bad-inputs-round2.md (a summary line, then one row per case) and docs/study/bad-inputs-round2.json
(every case's full output). With --only, the two files go to the temporary folder as bad-inputs-round2-only.md and
.json, so a partial run does not replace the full one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
QUICKSTART = REPO / "configs" / "quickstart.yaml"
DATA = Path(os.environ.get("MINBERT_DATA", REPO.parent / "shared" / "data")).resolve()
TINY = ["epochs=2", "steps_per_epoch=6", "checkpoint_every=0", "log_every=1", "precision=fp32", "device=cpu"] + [
    f"tasks.{t}.{k}={v}"
    for t in ("sst", "quora", "sts")
    for k, v in (("train_limit", 96), ("eval_limit", 48), ("batch_size", 8), ("max_length", 24))
]
SST_ONLY = "tasks={sst: {batch_size: 8, train_limit: 96, eval_limit: 48, max_length: 24}}"
CFIMDB_ONLY = "tasks={cfimdb: {batch_size: 4, train_limit: 16, eval_limit: 16, max_length: 24}}"
QUORA_ONLY = "tasks={quora: {batch_size: 8, train_limit: 48, eval_limit: 24, max_length: 24}}"
TIMEOUT = 240
MEMORY = 4 << 30  # bytes of heap a case may use (RLIMIT_DATA): a tiny run needs well under 2 GB

# filled in by build_fixtures()
FX: dict[str, Path] = {}


# --------------------------------------------------------------------------------------------------------------------
# cases


@dataclasses.dataclass
class Case:
    id: str
    surface: str
    expect: str  # "error" | "ok" | "either"
    what: str  # the command or call, short
    setup: Callable  # CLI: setup(d) -> argv (list) or (argv, stdin bytes); API: setup(d) -> fn() run in the child
    parts: tuple = ()  # what the error line must name
    check: Callable | None = None  # CLI: check(d, out, err) -> None | why wrong; API: check(value, d) -> None | why
    api: bool = False
    allow_new: bool = False  # a refusal may leave new files (e.g. a log the command always writes)
    changes: tuple = ()  # pre-existing paths (relative to d) the case may rightly change
    real: bool = False  # always run as a real subprocess
    timeout: int = TIMEOUT


CASES: list[Case] = []


def cli(id, surface, expect, what, setup, parts=(), check=None, **kw):
    CASES.append(Case(id, surface, expect, what, setup, tuple(parts), check, **kw))


def api(id, expect, what, fn, parts=(), check=None, **kw):
    CASES.append(Case(id, "api", expect, what, fn, tuple(parts), check, api=True, **kw))


def train(*overrides, out="run", config=None, tiny=True):
    """A setup that trains the tiny quickstart with these overrides into d/out."""

    def setup(d):
        cfg = str(config(d) if callable(config) else config or QUICKSTART)
        return ["train", cfg, *(TINY if tiny else []), f"checkpoint={FX['enc']}",
                *[o(d) if callable(o) else o for o in overrides], f"out={d / out}"]  # fmt: skip

    return setup


def copy_run(d, name="run", src="run") -> Path:
    dest = d / name
    shutil.copytree(FX[src], dest, symlinks=True)
    return dest


def data_copy(d, name="data") -> Path:
    """A data folder of symlinks to the real files; a case replaces one of them."""
    dest = d / name
    dest.mkdir()
    for f in DATA.iterdir():
        (dest / f.name).symlink_to(f)
    return dest


def data_with(fname, content=None, folder=False):
    """An override data_dir=<a copy of the data where fname holds content (None: missing)>."""
    return lambda d: "data_dir=" + str(replace_data(d, fname, content, folder))


def replace_data(d, fname, content: bytes | None, folder=False) -> Path:
    data = data_copy(d)
    (data / fname).unlink()
    if folder:
        (data / fname).mkdir()
    elif content is not None:
        (data / fname).write_bytes(content)
    return data


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def warned(*words):
    """A check: some WARNING line names each of `words` (an input ignored on purpose must at least say so)."""

    def check(d, out, err):
        lines = [x for x in err.splitlines() if x.startswith("WARNING")]
        if any(all(w in x for w in words) for x in lines):
            return None
        return f"ignored without a warning naming {', '.join(words)}"

    return check


def jsonl_lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip().startswith("{")]


# ---------------------------------------------------------------- LoRA settings


L = "lora.enabled=true"
cli("lora-rank-0", "lora", "error", "train lora.enabled=true lora.rank=0", train(L, "lora.rank=0"), ["lora.rank"])
cli("lora-alpha-0", "lora", "error", "train lora.enabled lora.alpha=0", train(L, "lora.alpha=0"), ["lora.alpha"])
cli("lora-dropout-1", "lora", "error", "train lora.enabled lora.dropout=1.0", train(L, "lora.dropout=1.0"),
    ["lora.dropout"])  # fmt: skip
cli("lora-targets-empty", "lora", "error", "train lora.enabled lora.targets=[]", train(L, "lora.targets=[]"),
    ["lora.targets"])  # fmt: skip
cli("lora-targets-case", "lora", "error", "train lora.enabled lora.targets=[Query]", train(L, "lora.targets=[Query]"),
    ["lora.targets", "Query"])  # fmt: skip
cli("lora-targets-string", "lora", "either", "train lora.enabled lora.targets=query (a string, not a list)",
    train(L, "lora.targets=query", "max_steps=1", "epochs=1"), ["lora.targets"],
    check=lambda d, o, e: None if "'q', 'u'" not in (d / "run" / "config.yaml").read_text() else
    "the string was split into letters")  # fmt: skip
cli("lora-tasks-unknown", "lora", "error", "train lora.enabled lora.tasks=[imdb]", train(L, "lora.tasks=[imdb]"),
    ["lora.tasks", "imdb"])  # fmt: skip
cli("lora-off-alpha", "lora", "error", "train lora.alpha=32 (lora off)", train("lora.alpha=32"), ["lora.alpha"])
cli("lora-off-tasks", "lora", "error", "train lora.tasks=[sst] (lora off)", train("lora.tasks=[sst]"), ["lora.tasks"])
cli("lora-enabled-maybe", "lora", "error", "train lora.enabled=maybe", train("lora.enabled=maybe"), ["lora.enabled"])
cli("lora-rank-float", "lora", "error", "train lora.enabled lora.rank=2.5", train(L, "lora.rank=2.5"), ["lora.rank"])
cli("lora-lr-mult-neg", "lora", "error", "train lora.enabled lora.lr_mult=-1", train(L, "lora.lr_mult=-1"),
    ["lora.lr_mult"])  # fmt: skip
cli("lora-rank-huge", "lora", "error", "train lora.enabled lora.rank=1000000000 (no memory holds it)",
    train(L, "lora.rank=1000000000"), ["lora.rank"])  # fmt: skip
cli("lora-unknown-key", "lora", "error", "train lora={enabled: true, colour: red}",
    train("lora={enabled: true, colour: red}"), ["colour"])  # fmt: skip
cli("lora-scalar", "lora", "error", "train lora=true (a section given a scalar)", train("lora=true"), ["lora"])
cli("lora-frozen", "lora", "error", "train lora.enabled frozen=true (sts with an extra layer, so only LoRA conflicts)",
    train(L, "frozen=true", "tasks.sts.extra_layers=1"), ["lora.enabled", "frozen"])  # fmt: skip

# ---------------------------------------------------------------- config keys

cli("cfg-seed-2^32", "config", "error", "train seed=4294967296", train("seed=4294967296"), ["seed"])
cli("cfg-epochs-float", "config", "error", "train epochs=1.5", train("epochs=1.5"), ["epochs"])
cli("cfg-lr-overflow", "config", "error", "train lr=1e400 (inf after parsing)", train("lr=1e400"), ["lr"])
cli("cfg-batch-bool", "config", "error", "train tasks.sst.batch_size=true", train("tasks.sst.batch_size=true"),
    ["tasks.sst.batch_size"])  # fmt: skip
cli("cfg-threads-1025", "config", "error", "train threads=1025", train("threads=1025"), ["threads"])
cli("cfg-sst-cross-head", "config", "error", "train tasks.sst.head=cross", train("tasks.sst.head=cross"),
    ["tasks.sst.head"])  # fmt: skip
cli("cfg-sts-ce-loss", "config", "error", "train tasks.sts.loss=ce", train("tasks.sts.loss=ce"), ["tasks.sts.loss"])
cli("cfg-features-linear", "config", "either", "train tasks.sst.features=[u,v] (linear head; documented: warned)",
    train("tasks.sst.features=[u,v]"), ["tasks.sst.features"], check=warned("tasks.sst.features"))  # fmt: skip
cli("cfg-features-unknown", "config", "error", "train tasks.quora.features=[u,w]", train("tasks.quora.features=[u,w]"),
    ["tasks.quora.features", "w"])  # fmt: skip
cli("cfg-cosine-scale-linear", "config", "either", "train tasks.sst.cosine_scale=3 (documented: warned)",
    train("tasks.sst.cosine_scale=3"), ["tasks.sst.cosine_scale"], check=warned("tasks.sst.cosine_scale"))  # fmt: skip
cli("cfg-margin-dir-off", "config", "error", "train tasks.sts.margin_direction=reverse (margin off)",
    train("tasks.sts.margin_direction=reverse"), ["margin_direction"])  # fmt: skip
cli("cfg-pals-off-size", "config", "error", "train pals.size=12 (pals off)", train("pals.size=12"), ["pals.size"])
cli("cfg-distill-off-temp", "config", "error", "train distill.temperature=3 (no teachers)",
    train("distill.temperature=3"), ["distill.temperature"])  # fmt: skip
cli("cfg-keep-tasks-alone", "config", "error", "train keep_tasks=[sst] (no from_run)", train("keep_tasks=[sst]"),
    ["keep_tasks"])  # fmt: skip
cli("cfg-early-metric", "config", "error", "train early_stopping.metric=sst/f1", train("early_stopping.metric=sst/f1"),
    ["early_stopping.metric", "sst/f1"])  # fmt: skip
cli("cfg-early-patience-neg", "config", "error", "train early_stopping.patience=-1",
    train("early_stopping.patience=-1"), ["early_stopping.patience"])  # fmt: skip
cli("cfg-tasks-empty", "config", "error", "train tasks={}", train("tasks={}"), ["tasks"])
cli("cfg-task-scalar", "config", "error", "train tasks.sst=5", train("tasks.sst=5"), ["tasks.sst"])
cli("cfg-logger-unknown", "config", "error", "train loggers=[mlflow]", train("loggers=[mlflow]"), ["mlflow"])
cli(
    "cfg-compile-bad",
    "config",
    "either",
    "train compile=notabackend (documented: warn and run eagerly)",
    train("compile=notabackend", "epochs=1", "max_steps=1"),
    ["compile", "notabackend"],
    check=warned("notabackend"),
)
cli("cfg-device-cuda", "config", "error", "train device=cuda (no GPU here)", train("device=cuda"), ["cuda"])
cli("cfg-schedule-args-rr", "config", "error", "train schedule_args={decay: 2} (round_robin)",
    train("schedule_args={decay: 2}"), ["schedule_args", "decay"])  # fmt: skip
cli("cfg-annealed-decay-neg", "config", "error", "train schedule=annealed schedule_args={decay: -1}",
    train("schedule=annealed", "schedule_args={decay: -1}"), ["decay"])  # fmt: skip
cli("cfg-lr-schedule-typo", "config", "error", "train lr_schedule=warmup-linear", train("lr_schedule=warmup-linear"),
    ["lr_schedule", "warmup-linear"])  # fmt: skip
cli("cfg-checkpoint-file", "config", "error", "train checkpoint=<a model.safetensors file>",
    train(lambda d: f"checkpoint={FX['enc'] / 'model.safetensors'}"), ["model.safetensors"])  # fmt: skip
cli("cfg-extra-losses-bad", "config", "error", "train tasks.sts.extra_losses={cosent: {weight: x}}",
    train("tasks.sts.extra_losses={cosent: {weight: x}}"), ["tasks.sts.extra_losses"])  # fmt: skip
cli("cfg-override-no-value", "config", "error", "train epochs= (empty value)", train("epochs="), ["epochs"])
cli("cfg-override-dup", "config", "either", "train epochs=1 epochs=2 (the same key twice)",
    train("epochs=1", "epochs=2", "max_steps=1"), ["epochs"],
    check=lambda d, o, e: None if "epochs: 2" in (d / "run" / "config.yaml").read_text() else
    "the later of two overrides did not win")  # fmt: skip
cli("cfg-max-length-edge", "config", "ok", "train tasks.*.max_length=3 (the least allowed)",
    train("epochs=1", "max_steps=2", *[f"tasks.{t}.max_length=3" for t in ("sst", "quora", "sts")]),
    check=lambda d, o, e: None if (d / "run" / "summary.json").is_file() else "no summary.json")  # fmt: skip


def _yaml(text):
    return lambda d: write(d / "c.yaml", text)


cli("cfg-file-tab-indent", "config", "error", "train c.yaml indented with a tab",
    train(config=_yaml("epochs: 1\ntasks:\n\tsst: {}\n")), ["c.yaml"])  # fmt: skip
cli("cfg-file-scalar", "config", "error", "train c.yaml holding the scalar 'hello'",
    train(config=_yaml("hello\n")), ["c.yaml"])  # fmt: skip
cli("cfg-file-typo-key", "config", "error", "train c.yaml with `epoch: 2` (a typo)",
    train(config=_yaml(QUICKSTART.read_text() + "\nepoch: 2\n")), ["epoch"])  # fmt: skip
cli("cfg-budget-typo", "config", "error", "train c.yaml --budget whose budget section has epochz: 1",
    lambda d: ["train", str(write(d / "c.yaml", QUICKSTART.read_text() + "\nbudget: {epochz: 1}\n")), "--budget",
               *TINY, f"checkpoint={FX['enc']}", f"out={d / 'run'}"], ["epochz"])  # fmt: skip
cli("cfg-file-utf16", "config", "error", "train c.yaml saved as UTF-16",
    train(config=lambda d: write(d / "c.yaml", "epochs: 1\n".encode("utf-16"))), ["c.yaml"])  # fmt: skip
cli("cfg-file-huge-int", "config", "error", "train epochs=10**30", train("epochs=" + "1" + "0" * 30), ["epochs"])

# ---------------------------------------------------------------- data-dir problems

cli("data-dir-is-file", "data", "error", "train --data-dir <a file>",
    lambda d: train("--data-dir", str(write(d / "notes.txt", "x")))(d), ["notes.txt"])  # fmt: skip
cli("data-missing-train", "data", "error", "train data_dir=<copy without ids-sst-train.csv>",
    train(data_with('ids-sst-train.csv')), ["ids-sst-train.csv"])  # fmt: skip
cli("data-empty-train", "data", "error", "train data_dir=<ids-sst-train.csv of 0 bytes>",
    train(data_with('ids-sst-train.csv', b'')), ["ids-sst-train.csv"])  # fmt: skip
cli("data-header-only", "data", "error", "train data_dir=<ids-sst-train.csv: header only>",
    train(data_with('ids-sst-train.csv', b'\tid\tsentence\tsentiment\n')),
    ["ids-sst-train.csv"])  # fmt: skip
cli("data-binary", "data", "error", "train data_dir=<ids-sst-train.csv: random bytes>",
    train(data_with('ids-sst-train.csv', bytes(range(256)) * 64)),
    ["ids-sst-train.csv"])  # fmt: skip
cli(
    "data-folder-for-file",
    "data",
    "error",
    "train data_dir=<ids-sst-dev.csv is a folder>",
    train(data_with("ids-sst-dev.csv", folder=True)),
    ["ids-sst-dev.csv"],
)
cli("data-latin1", "data", "error", "train data_dir=<sts-train.csv in Latin-1>",
    train(data_with('sts-train.csv', (DATA / 'sts-train.csv').read_bytes()[:3000] + 'caf\xe9\n'.encode('latin-1'))),
    ["sts-train.csv"])  # fmt: skip
cli("data-wrong-columns", "data", "error", "train data_dir=<ids-sst-train.csv with the STS columns>",
    train(data_with('ids-sst-train.csv', (DATA / 'sts-train.csv').read_bytes())),
    ["ids-sst-train.csv"])  # fmt: skip
cli("data-dir-missing", "data", "error", "train --data-dir <missing folder>",
    lambda d: train("--data-dir", str(d / "nowhere"))(d), ["nowhere"])  # fmt: skip

# ---------------------------------------------------------------- from_run


def _add(*extra, base="sst", tasks=CFIMDB_ONLY):
    return train(lambda d: f"from_run={FX[base]}", tasks, *extra, tiny=False)


def _steps(*x):
    return ["epochs=1", "steps_per_epoch=2", "checkpoint_every=0", "device=cpu", *x]


cli("from-run-missing", "from_run", "error", "train from_run=<missing> tasks={cfimdb}",
    train(lambda d: f"from_run={d / 'nope'}", CFIMDB_ONLY, tiny=False), ["from_run", "nope"])  # fmt: skip
cli(
    "from-run-file",
    "from_run",
    "error",
    "train from_run=<a file>",
    train(lambda d: f"from_run={write(d / 'f.txt', 'x')}", CFIMDB_ONLY, tiny=False),
    ["from_run", "f.txt"],
)
cli("from-run-same-task", "from_run", "error", "train from_run=SST tasks={sst}", _add(*_steps(), tasks=SST_ONLY),
    ["tasks.sst"])  # fmt: skip
cli("from-run-other-ckpt", "from_run", "error", "train from_run=SST checkpoint=default tasks={cfimdb}",
    lambda d: [*_add(*_steps())(d)[:-1], "checkpoint=default", f"out={d / 'run'}"], ["checkpoint"])  # fmt: skip


def _damaged_base(what):
    def setup(d):
        run = copy_run(d, "base", "sst")
        if what == "best.json":
            (run / "best.json").unlink()
        elif what == "config":
            write(run / "config.yaml", "tasks: {sst: {head: linear\n")
        elif what == "weights":
            best = json.loads((run / "best.json").read_text())["folder"]
            p = run / "checkpoints" / best / "model.safetensors"
            p.write_bytes(p.read_bytes()[:1000])
        return ["train", str(QUICKSTART), f"checkpoint={FX['enc']}", f"from_run={run}", CFIMDB_ONLY, *_steps(),
                f"out={d / 'run'}"]  # fmt: skip

    return setup


cli("from-run-no-best", "from_run", "error", "train from_run=<run without best.json>", _damaged_base("best.json"),
    ["from_run", "base"])  # fmt: skip
cli("from-run-bad-config", "from_run", "error", "train from_run=<run whose config.yaml is broken YAML>",
    _damaged_base("config"), ["from_run", "config.yaml"])  # fmt: skip
cli("from-run-truncated", "from_run", "error", "train from_run=<run whose best weights are cut short>",
    _damaged_base("weights"), ["from_run", "model.safetensors"])  # fmt: skip
cli("from-run-lora-rank", "from_run", "error", "train from_run=LORA lora.enabled lora.rank=4 tasks={cfimdb}",
    _add(L, "lora.rank=4", *_steps(), base="lora"), ["lora"])  # fmt: skip
cli("from-run-pals", "from_run", "error", "train from_run=SST pals.enabled=true", _add("pals.enabled=true", *_steps()),
    ["pals"])  # fmt: skip
cli("from-run-init-from", "from_run", "error", "train from_run=SST init_from=SST",
    _add(lambda d: f"init_from={FX['sst']}", *_steps()), ["init_from"])  # fmt: skip
cli("from-run-keep-tasks", "from_run", "error", "train from_run=SST keep_tasks=[sst] tasks={cfimdb}",
    _add("keep_tasks=[sst]", *_steps()), ["keep_tasks"])  # fmt: skip
cli("from-run-sweep-folder", "from_run", "error", "train from_run=<a folder of runs, not a run>",
    lambda d: (copy_run(d / "sweep", "seed1", "sst"), _add(*_steps())(d))[1][:3]
    + [f"from_run={d / 'sweep'}", CFIMDB_ONLY, *_steps(), f"out={d / 'run'}"], ["from_run", "sweep"])  # fmt: skip


def _kept_sst(d, o, e):
    run, base = d / "run", FX["sst"]
    if not (run / "summary.json").is_file():
        return "no summary.json"
    a = (run / "predictions" / "sst-dev-output.csv").read_bytes()
    b = (base / "predictions" / "sst-dev-output.csv").read_bytes()
    return None if a == b else "the kept task's predictions changed"


cli("from-run-ok", "from_run", "ok", "train from_run=SST tasks={cfimdb} (right: sst predictions byte-identical)",
    _add(*_steps()), check=_kept_sst)  # fmt: skip
cli(
    "from-run-trailing-slash",
    "from_run",
    "ok",
    "train from_run=SST/ (a trailing slash) tasks={cfimdb}",
    lambda d: [a if not a.startswith("from_run=") else a + "/" for a in _add(*_steps())(d)],
    check=_kept_sst,
)

# ---------------------------------------------------------------- distill.teachers


def _distill(teachers, *extra, tasks=SST_ONLY):
    return train(lambda d: "distill.teachers=[" + ", ".join(str(t(d)) for t in teachers) + "]", tasks, *_steps(),
                 *extra, tiny=False)  # fmt: skip


cli("distill-missing", "distill", "error", "train distill.teachers=[<missing>]", _distill([lambda d: d / "nope"]),
    ["distill.teachers[0]", "nope"])  # fmt: skip
cli("distill-file", "distill", "error", "train distill.teachers=[<a file>]",
    _distill([lambda d: write(d / "t.txt", "x")]), ["distill.teachers[0]", "t.txt"])  # fmt: skip
cli("distill-foreign", "distill", "error", "train tasks={quora} distill.teachers=[SST] (no shared task)",
    _distill([lambda d: FX["sst"]], tasks=QUORA_ONLY), ["distill.teachers[0]"])  # fmt: skip
cli("distill-second-bad", "distill", "error", "train distill.teachers=[SST, <missing>]",
    _distill([lambda d: FX["sst"], lambda d: d / "gone"]), ["distill.teachers[1]", "gone"])  # fmt: skip
cli("distill-empty-name", "distill", "error", "train distill.teachers=['']", _distill([lambda d: "''"]),
    ["distill.teachers[0]"])  # fmt: skip
cli("distill-weight-1.5", "distill", "error", "train distill.teachers=[SST] distill.weight=1.5",
    _distill([lambda d: FX["sst"]], "distill.weight=1.5"), ["distill.weight"])  # fmt: skip
cli("distill-temp-0", "distill", "error", "train distill.teachers=[SST] distill.temperature=0",
    _distill([lambda d: FX["sst"]], "distill.temperature=0"), ["distill.temperature"])  # fmt: skip
cli("distill-self", "distill", "error", "train distill.teachers=[<its own out>]", _distill([lambda d: d / "run"]),
    ["distill.teachers[0]"])  # fmt: skip
cli("distill-string", "distill", "either", "train distill.teachers=SST (a string, not a list)",
    train(lambda d: f"distill.teachers={FX['sst']}", SST_ONLY, *_steps(), tiny=False), ["distill.teachers"],
    check=lambda d, o, e: "a string was accepted as the teacher list: " + o[-200:]
    if "distill.teachers[1]" in e else None)  # fmt: skip


def _half_teacher(d):
    t = copy_run(d, "teacher", "sst")
    for p in (t / "checkpoints").iterdir():
        if p.name.startswith("best"):
            for f in p.iterdir():
                f.unlink()
            p.rmdir()
    return t


cli("distill-teacher-no-best-folder", "distill", "error", "train distill.teachers=[<run whose best folder is gone>]",
    _distill([_half_teacher]), ["distill.teachers[0]", "teacher"])  # fmt: skip


# ---------------------------------------------------------------- sweep files


def sweep(spec: str, *flags, name="s.yaml", pre=None):
    def setup(d):
        if pre:
            pre(d)
        text = spec.replace("QS", str(QUICKSTART)).replace("OUT", str(d / "o")).replace("D/", f"{d}/")
        return ["sweep", str(write(d / name, text)), *flags]

    return setup


V = "variants: {a: []}\nout: OUT\n"
cli("sweep-seeds-string", "sweep", "error", "sweep seeds: '1,2,3'",
    sweep(f"base: QS\n{V}seeds: '1,2,3'\n", "--dry-run"), ["seeds"])  # fmt: skip
cli("sweep-seeds-float", "sweep", "error", "sweep seeds: [1.5]", sweep(f"base: QS\n{V}seeds: [1.5]\n", "--dry-run"),
    ["seeds"])  # fmt: skip
cli("sweep-seeds-2^32", "sweep", "error", "sweep seeds: [4294967296]",
    sweep(f"base: QS\n{V}seeds: [4294967296]\n", "--dry-run"), ["seed"])  # fmt: skip
cli("sweep-cli-seeds-dup", "sweep", "error", "sweep --seeds 1 1", sweep(f"base: QS\n{V}", "--seeds", "1", "1",
    "--dry-run"), ["seed 1"])  # fmt: skip
cli("sweep-cli-seeds-neg", "sweep", "error", "sweep --seeds -1", sweep(f"base: QS\n{V}", "--seeds", "-1", "--dry-run"),
    ["seed"])  # fmt: skip
cli("sweep-cli-budget-0", "sweep", "error", "sweep --budget 0", sweep(f"base: QS\n{V}", "--budget", "0", "--dry-run"),
    ["--budget"])  # fmt: skip
cli("sweep-cli-budget-lt-epochs", "sweep", "error", "sweep --budget 1 (base has 2 epochs)",
    sweep(f"base: QS\n{V}", "--budget", "1", "--dry-run"), ["--budget 1"])  # fmt: skip
cli("sweep-cli-only-missing", "sweep", "error", "sweep --only b", sweep(f"base: QS\n{V}", "--only", "b", "--dry-run"),
    ["--only", "b"])  # fmt: skip
cli("sweep-cli-only-empty", "sweep", "either", "sweep --only '' (right: refused, or warned that it runs all)",
    sweep(f"base: QS\n{V}", "--only", "", "--dry-run"), ["--only"], check=warned("--only"))  # fmt: skip
cli("sweep-cli-only-comma", "sweep", "either", "sweep --only a, (trailing comma)",
    sweep(f"base: QS\n{V}", "--only", "a,", "--dry-run"), ["--only"],
    check=lambda d, o, e: None if "a" in o else "the dry run lists no run of variant a")  # fmt: skip
cli("sweep-cli-seed-override", "sweep", "error", "sweep s.yaml seed=3", sweep(f"base: QS\n{V}", "seed=3", "--dry-run"),
    ["seed"])  # fmt: skip
cli("sweep-cli-out-override", "sweep", "error", "sweep s.yaml out=x", sweep(f"base: QS\n{V}", "out=x", "--dry-run"),
    ["out"])  # fmt: skip
cli("sweep-cli-unknown-override", "sweep", "error", "sweep s.yaml nonsense=1",
    sweep(f"base: QS\n{V}", "nonsense=1", "--dry-run"), ["nonsense"])  # fmt: skip
cli("sweep-cli-switched-off", "sweep", "error", "sweep s.yaml pals.heads=3 (pals off)",
    sweep(f"base: QS\n{V}", "pals.heads=3", "--dry-run"), ["pals.heads"])  # fmt: skip
P = "variants:\n  a:\n    overrides: []\n    published: PUB\nout: OUT\n"
cli("sweep-published-percent", "sweep", "error", "sweep published {sst: 50.4, quora: 78.5, sts: 62.4} (percent)",
    sweep("base: QS\n" + P.replace("PUB", "{sst: 50.4, quora: 78.5, sts: 62.4}"), "--dry-run"),
    ["published.sst", "50.4"])  # fmt: skip
cli("sweep-published-no-sts", "sweep", "error", "sweep published {sst: .5, quora: .7}",
    sweep("base: QS\n" + P.replace("PUB", "{sst: 0.5, quora: 0.7}"), "--dry-run"), ["published"])  # fmt: skip
cli("sweep-published-overall-2", "sweep", "error", "sweep published {..., overall: 2}",
    sweep("base: QS\n" + P.replace("PUB", "{sst: 0.5, quora: 0.7, sts: 0.6, overall: 2}"), "--dry-run"),
    ["overall"])  # fmt: skip
cli("sweep-published-nan", "sweep", "error", "sweep published {sst: .nan, ...}",
    sweep("base: QS\n" + P.replace("PUB", "{sst: .nan, quora: 0.7, sts: 0.6}"), "--dry-run"),
    ["published.sst"])  # fmt: skip
cli("sweep-published-string", "sweep", "error", "sweep published: '0.5 0.7 0.6'",
    sweep("base: QS\n" + P.replace("PUB", "'0.5 0.7 0.6'"), "--dry-run"), ["published"])  # fmt: skip
cli("sweep-base-is-sweep", "sweep", "error", "sweep base: s.yaml (the sweep file itself)",
    sweep(f"base: s.yaml\n{V}", "--dry-run"), ["base 's.yaml'", "sweep file"])  # fmt: skip
cli("sweep-base-json", "sweep", "error", "sweep base: a JSON list file",
    sweep(f"base: b.json\n{V}", "--dry-run", pre=lambda d: write(d / "b.json", "[1, 2]")), ["b.json"])  # fmt: skip
cli("sweep-grid-bad-value", "sweep", "error", "sweep grid: {lr: [1.0e-5, fast]}",
    sweep("base: QS\ngrid: {lr: [1.0e-5, fast]}\nout: OUT\n", "--dry-run"), ["lr", "fast"])  # fmt: skip


def _nested(out: str) -> bool:
    """Whether one run folder (out=...) a sweep's dry run prints lies inside another's variant folder."""
    runs = [Path(w[4:]).parent for w in out.split() if w.startswith("out=")]
    return len(runs) < 2 or any(a != b and b in a.parents for a in runs for b in runs)


cli(
    "sweep-grid-slash-value",
    "sweep",
    "either",
    "sweep grid: {data_dir: [D/x, D/x/y]} (values with slashes)",
    sweep("base: QS\ngrid: {data_dir: [D/x, D/x/y]}\nout: OUT\n", "--dry-run"),
    ["data_dir"],
    check=lambda d, o, e: "variant folders nest under each other: " + o.strip()[:200] if _nested(o) else None,
)
cli("sweep-grid-dup-values", "sweep", "either", "sweep grid: {lr: [1.0e-5, 1.0e-5]} (one value twice)",
    sweep("base: QS\ngrid: {lr: [1.0e-5, 1.0e-5]}\nout: OUT\n", "--dry-run"), ["lr"],
    check=lambda d, o, e: None)  # fmt: skip
cli("sweep-search-unknown-param-key", "sweep", "error", "sweep search.params.lr {low, high, step: 2}",
    sweep("base: QS\nsearch: {trials: 1, params: {lr: {low: 1.0e-5, high: 1.0e-4, step: 2}}}\nout: OUT\n"),
    ["step"])  # fmt: skip
cli("sweep-search-int-float-high", "sweep", "error", "sweep search epochs {low: 1, high: 3.5, int: true}",
    sweep("base: QS\nsearch: {trials: 1, params: {epochs: {low: 1, high: 3.5, int: true}}}\nout: OUT\n"),
    ["epochs"])  # fmt: skip
cli("sweep-search-budget", "sweep", "error", "sweep <search> --budget 4",
    sweep("base: QS\nsearch: {trials: 1, params: {lr: {low: 1.0e-5, high: 1.0e-4}}}\nout: OUT\n", "--budget", "4"),
    ["--budget"])  # fmt: skip
cli("sweep-search-metric-space", "sweep", "error", "sweep search.metric: 'overall ' (a trailing space)",
    sweep("base: QS\nsearch: {trials: 1, metric: 'overall ', params: {lr: {low: 1.0e-5, high: 1.0e-4}}}\nout: OUT\n"),
    ["metric"])  # fmt: skip
cli("sweep-search-choices-scalar", "sweep", "error", "sweep search head_lr_mult {choices: 3}",
    sweep("base: QS\nsearch: {trials: 1, params: {head_lr_mult: {choices: 3}}}\nout: OUT\n"),
    ["head_lr_mult"])  # fmt: skip
cli("sweep-search-and-variants", "sweep", "error", "sweep search: + variants:",
    sweep(f"base: QS\n{V}search: {{trials: 1, params: {{lr: {{low: 1.0e-5, high: 1.0e-4}}}}}}\n"),
    ["search"])  # fmt: skip
cli("sweep-file-latin1", "sweep", "error", "sweep s.yaml in Latin-1",
    lambda d: ["sweep", str(write(d / "s.yaml", f"base: {QUICKSTART}\n# caf\xe9\n".encode("latin-1"))),
               "--dry-run"], ["s.yaml"])  # fmt: skip
cli(
    "sweep-file-folder",
    "sweep",
    "error",
    "sweep <a folder>",
    lambda d: ["sweep", str(d), "--dry-run"],
    ["sweep-file-folder"],
)
cli("sweep-file-empty", "sweep", "error", "sweep <empty file>",
    lambda d: ["sweep", str(write(d / "s.yaml", "")), "--dry-run"], ["s.yaml"])  # fmt: skip
cli("sweep-variant-dup-key", "sweep", "error", "sweep variants with a key twice",
    sweep("base: QS\nvariants:\n  a: []\n  a: [epochs=1]\nout: OUT\n", "--dry-run"), ["a"])  # fmt: skip
cli("sweep-variant-bad-override", "sweep", "error", "sweep variants: {a: [lora.rank=4]} (lora off)",
    sweep("base: QS\nvariants: {a: [lora.rank=4]}\nout: OUT\n", "--dry-run"), ["lora.rank"])  # fmt: skip
cli("sweep-out-is-file", "sweep", "error", "sweep out: <a file>",
    sweep("base: QS\nvariants: {a: []}\nout: D/f.txt\n", "--dry-run", pre=lambda d: write(d / "f.txt", "x")),
    ["f.txt"])  # fmt: skip


def _fake_sweep(d, published="", summary=None, cfg_text=None, variant="a"):
    """A sweep file and one finished run of it (its config as the variant gives it, a summary.json)."""
    from minbert.config import dump_yaml, load_config
    from minbert.multitask.config import TrainConfig

    spec = (
        f"base: {QUICKSTART}\nvariants:\n  {variant}:\n    overrides: [epochs=1]\n{published}"
        f"out: {d / 'o'}\nseeds: [1]\n"
    )
    path = write(d / "s.yaml", spec)
    run = d / "o" / variant / "seed1"
    run.mkdir(parents=True)
    if cfg_text is None:
        dump_yaml(load_config(TrainConfig, QUICKSTART, ["epochs=1", "seed=1", f"out={run}"]), run / "config.yaml")
    else:
        write(run / "config.yaml", cfg_text)
    dev = {"sst/acc": 0.45, "quora/acc": 0.75, "sts/pearson": 0.8, "overall": 0.7}
    summary = summary if summary is not None else json.dumps({"dev": dev, "steps": 12, "wall_time_s": 3.0})
    write(run / "summary.json", summary)
    return path


PUB = "    published: {sst: 0.504, quora: 0.785, sts: 0.624}\n"
cli("sweep-report-published-ok", "sweep", "ok", "sweep --report with published numbers and one finished run",
    lambda d: ["sweep", str(_fake_sweep(d, PUB)), "--report"],
    check=lambda d, o, e: None if "0.504" in (d / "o" / "results.md").read_text() else
    "results.md lacks the published 0.504")  # fmt: skip
cli("sweep-report-summary-no-sts", "sweep", "either", "sweep --report, the run's summary.json lacks sts/pearson",
    lambda d: ["sweep", str(_fake_sweep(d, PUB, summary=json.dumps({"dev": {"sst/acc": 0.4}, "steps": 12,
                                                                    "wall_time_s": 3.0}))), "--report"],
    ["summary.json"], check=lambda d, o, e: None)  # fmt: skip
cli("sweep-report-summary-no-steps", "sweep", "either", "sweep --report, the run's summary.json has no 'steps'",
    lambda d: ["sweep", str(_fake_sweep(d, summary=json.dumps({"dev": {"sst/acc": 0.4, "overall": 0.5}}))),
               "--report"], ["summary.json"],
    check=lambda d, o, e: None if "| - |" in o else "the table should show - for the missing steps")  # fmt: skip
cli(
    "sweep-report-summary-garbage",
    "sweep",
    "error",
    "sweep --report, the run's summary.json is cut off",
    lambda d: ["sweep", str(_fake_sweep(d, summary='{"dev": {"sst/a')), "--report"],
    ["summary.json"],
)
cli("sweep-report-nothing", "sweep", "error", "sweep --report before any run finished",
    sweep(f"base: QS\n{V}", "--report"), ["no finished"])  # fmt: skip
cli("sweep-kept-config-broken", "sweep", "error", "sweep --dry-run, a kept run's config.yaml is broken YAML",
    lambda d: ["sweep", str(_fake_sweep(d, cfg_text="epochs: [1\n")), "--dry-run"], ["config.yaml"])  # fmt: skip
cli("sweep-run-folder-is-file", "sweep", "error", "sweep --dry-run, OUT/a/seed1 is a file",
    lambda d: ["sweep", str(write(d / "s.yaml", f"base: {QUICKSTART}\nvariants: {{a: []}}\nseeds: [1]\nout: "
               f"{d / 'o'}\n")), "--dry-run"] if write(d / "o" / "a" / "seed1", "x") else [], ["seed1"])  # fmt: skip

# ---------------------------------------------------------------- plot / analyze / compare / ensemble


def _run_with(d, fname, content, src="run"):
    run = copy_run(d, "run", src)
    p = run / fname
    if content is None:
        p.unlink()
    elif content == "DIR":
        p.unlink() if p.is_file() else None
        p.mkdir()
    else:
        write(p, content)
    return run


def _plots_ok(d, o, e):
    pngs = sorted((d / "run" / "plots").glob("*.png"))
    return None if pngs and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs) else "no PNG written"


cli("plot-ok", "plot", "ok", "plot RUN (right: PNGs in RUN/plots, nothing else touched)",
    lambda d: ["plot", str(copy_run(d))], check=_plots_ok)  # fmt: skip
cli("plot-metrics-empty", "plot", "error", "plot RUN whose metrics.jsonl is empty",
    lambda d: ["plot", str(_run_with(d, "metrics.jsonl", b""))], ["metrics.jsonl"])  # fmt: skip
cli("plot-metrics-latin1", "plot", "error", "plot RUN whose metrics.jsonl holds a byte 0xff",
    lambda d: ["plot", str(_run_with(d, "metrics.jsonl", b'{"step": 1, "train/loss/sst": 1.0}\n\xff\n'))],
    ["metrics.jsonl"])  # fmt: skip
cli("plot-metrics-folder", "plot", "error", "plot RUN whose metrics.jsonl is a folder",
    lambda d: ["plot", str(_run_with(d, "metrics.jsonl", "DIR"))], ["metrics.jsonl"])  # fmt: skip
cli("plot-metrics-nan", "plot", "either", "plot RUN whose metrics.jsonl has a NaN loss",
    lambda d: ["plot", str(_run_with(d, "metrics.jsonl", (FX["run"] / "metrics.jsonl").read_text()
                                      + '{"step": 13, "epoch": 2, "train/loss/sst": NaN}\n'))], ["metrics.jsonl"],
    check=_plots_ok)  # fmt: skip
cli("plot-plots-is-file", "plot", "error", "plot RUN where RUN/plots is a file",
    lambda d: ["plot", str(_run_with(d, "plots", "my notes"))], ["plots"])  # fmt: skip
cli("plot-missing-run", "plot", "error", "plot <missing folder>", lambda d: ["plot", str(d / "nope")], ["nope"])
cli("plot-metrics-array", "plot", "error", "plot RUN whose metrics.jsonl line 1 is a JSON list",
    lambda d: ["plot", str(_run_with(d, "metrics.jsonl", "[1, 2]\n"))], ["metrics.jsonl"])  # fmt: skip
cli("compare-chart-jpg", "compare", "error", "compare RUN --chart c.jpg",
    lambda d: ["compare", str(FX["run"]), "--chart", str(d / "c.jpg")], ["--chart"])  # fmt: skip
cli(
    "compare-chart-folder",
    "compare",
    "error",
    "compare RUN --chart <an existing folder named x.png>",
    lambda d: (d / "x.png").mkdir() or ["compare", str(FX["run"]), "--chart", str(d / "x.png")],
    ["x.png"],
)
cli(
    "compare-chart-missing-dir",
    "compare",
    "either",
    "compare RUN --chart new/deeper/c.png",
    lambda d: ["compare", str(FX["run"]), "--chart", str(d / "new" / "deeper" / "c.png")],
    ["new"],
    check=lambda d, o, e: None if (d / "new" / "deeper" / "c.png").is_file() else "exit 0 but no chart",
)
cli(
    "compare-no-summary",
    "compare",
    "error",
    "compare RUN-without-summary.json --chart c.png",
    lambda d: ["compare", str(_run_with(d, "summary.json", None)), "--chart", str(d / "c.png")],
    ["summary.json"],
)
cli(
    "compare-summary-list",
    "compare",
    "error",
    "compare RUN whose summary.json is []",
    lambda d: ["compare", str(_run_with(d, "summary.json", "[]")), "--chart", str(d / "c.png")],
    ["summary.json"],
)
cli(
    "compare-summary-nan",
    "compare",
    "either",
    "compare RUN whose summary.json has sst/acc NaN",
    lambda d: [
        "compare",
        str(_run_with(d, "summary.json", '{"dev": {"sst/acc": NaN, "overall": 0.5}}')),
        "--chart",
        str(d / "c.png"),
    ],
    ["summary.json"],
    check=lambda d, o, e: None if "nan" in o.lower() or "-" in o else "the NaN vanished from the table",
)
cli("compare-summary-utf16", "compare", "error", "compare RUN whose summary.json is UTF-16",
    lambda d: ["compare", str(_run_with(d, "summary.json", (FX["run"] / "summary.json").read_text().encode(
        "utf-16"))), "--chart", str(d / "c.png")], ["summary.json"])  # fmt: skip
cli("compare-file-arg", "compare", "error", "compare <a file> --chart c.png",
    lambda d: ["compare", str(write(d / "r.txt", "x")), "--chart", str(d / "c.png")], ["r.txt"])  # fmt: skip
cli(
    "ensemble-min-text",
    "ensemble",
    "error",
    "ensemble RUN --min sst=abc",
    lambda d: ["ensemble", str(FX["run"]), "--out", str(d / "e"), "--min", "sst=abc"],
    ["sst", "abc"],
)
cli(
    "ensemble-min-none-pass",
    "ensemble",
    "error",
    "ensemble RUN RUN --min sst=2 (no run reaches it)",
    lambda d: ["ensemble", str(FX["run"]), str(FX["run"]), "--out", str(d / "e"), "--min", "sst=2"],
    ["sst"],
)
cli("ensemble-min-no-eq", "ensemble", "error", "ensemble RUN --min sst",
    lambda d: ["ensemble", str(FX["run"]), "--out", str(d / "e"), "--min", "sst"], ["--min"])  # fmt: skip
cli(
    "ensemble-not-a-run",
    "ensemble",
    "error",
    "ensemble <a folder of notes> --out e",
    lambda d: write(d / "notes" / "a.txt", "x") and ["ensemble", str(d / "notes"), "--out", str(d / "e")],
    ["notes"],
)
cli("ensemble-out-file", "ensemble", "error", "ensemble RUN --out <an existing file>",
    lambda d: ["ensemble", str(FX["run"]), "--out", str(write(d / "e.txt", "mine"))], ["e.txt"])  # fmt: skip
cli("ensemble-mixed-tasks", "ensemble", "either", "ensemble RUN SST --out e (different task sets)",
    lambda d: ["ensemble", str(FX["run"]), str(FX["sst"]), "--out", str(d / "e")], ["sst"],
    check=lambda d, o, e: None if any((d / "e").iterdir()) else "exit 0 and an empty --out")  # fmt: skip
cli("ensemble-truncated-weights", "ensemble", "error", "ensemble RUN(best weights cut short) --out e",
    lambda d: ["ensemble", str(_cut_best(d)), "--out", str(d / "e")], ["model.safetensors"])  # fmt: skip
cli("ensemble-out-in-run", "ensemble", "either", "ensemble RUN --out RUN/ens (inside a run)",
    lambda d: ["ensemble", str(copy_run(d)), "--out", str(d / "run" / "ens")], ["ens"],
    check=lambda d, o, e: None)  # fmt: skip
cli("analyze-plots-file", "analyze", "error", "analyze RUN where RUN/plots is a file",
    lambda d: ["analyze", str(_run_with(d, "plots", "mine"))], ["plots"])  # fmt: skip
cli("analyze-data-missing", "analyze", "error", "analyze RUN --data-dir <missing>",
    lambda d: ["analyze", str(copy_run(d)), "--data-dir", str(d / "nodata")], ["nodata"])  # fmt: skip
cli("analyze-perplexity-nan", "analyze", "error", "analyze RUN --perplexity nan",
    lambda d: ["analyze", str(copy_run(d)), "--perplexity", "nan"], ["perplexity"])  # fmt: skip
cli("analyze-no-best", "analyze", "either", "analyze RUN-without-best.json (recovery: rebuilt from the folders)",
    lambda d: ["analyze", str(_run_with(d, "best.json", None))], ["best"], check=_plots_ok)  # fmt: skip


def _cut_best(d, name="run", src="run"):
    run = copy_run(d, name, src)
    best = json.loads((run / "best.json").read_text())["folder"]
    p = run / "checkpoints" / best / "model.safetensors"
    p.write_bytes(p.read_bytes()[:2000])
    return run


# ---------------------------------------------------------------- export


def _exported(d, o, e, name="x"):
    out = d / name
    return None if out.is_dir() and any(out.iterdir()) else "exit 0 but nothing exported"


cli(
    "export-task-unknown",
    "export",
    "error",
    "export RUN x --format onnx --task imdb",
    lambda d: ["export", str(FX["run"]), str(d / "x"), "--format", "onnx", "--task", "imdb"],
    ["imdb"],
)
cli("export-out-file", "export", "error", "export RUN <existing file> --format hf",
    lambda d: ["export", str(FX["run"]), str(write(d / "x", "mine")), "--format", "hf"], ["x"])  # fmt: skip
cli("export-out-is-run", "export", "error", "export RUN RUN --format hf --overwrite",
    lambda d: ["export", str(copy_run(d)), str(d / "run"), "--format", "hf", "--overwrite"], ["run"])  # fmt: skip
cli("export-out-parent-file", "export", "error", "export RUN <file>/x --format hf",
    lambda d: ["export", str(FX["run"]), str(write(d / "f", "mine") / "x"), "--format", "hf"], ["f"])  # fmt: skip
cli(
    "export-int8-st",
    "export",
    "error",
    "export RUN x --format sentence-transformers --int8",
    lambda d: ["export", str(FX["run"]), str(d / "x"), "--format", "sentence-transformers", "--int8"],
    ["--int8"],
)
cli("export-st-no-pair", "export", "either", "export SST x --format sentence-transformers (no cosine task)",
    lambda d: ["export", str(FX["sst"]), str(d / "x"), "--format", "sentence-transformers"], ["sst"],
    check=_exported)  # fmt: skip
cli("export-lora-hf", "export", "either", "export LORA x --format hf",
    lambda d: ["export", str(FX["lora"]), str(d / "x"), "--format", "hf"], ["lora"], check=_exported)  # fmt: skip
cli("export-bad-best-json", "export", "either", "export RUN(best.json garbage) x --format hf (recovery: rebuilt)",
    lambda d: ["export", str(_run_with(d, "best.json", "{not json")), str(d / "x"), "--format", "hf"], ["best"],
    check=_exported, changes=("run/best.json",))  # fmt: skip
cli("export-overwrite-notes", "export", "error", "export RUN <folder of my notes> --format hf --overwrite",
    lambda d: write(d / "x" / "notes.txt", "mine") and ["export", str(FX["run"]), str(d / "x"), "--format", "hf",
                                                        "--overwrite"], ["x"])  # fmt: skip
cli("export-format-typo", "export", "error", "export RUN x --format HF",
    lambda d: ["export", str(FX["run"]), str(d / "x"), "--format", "HF"], ["HF"])  # fmt: skip
cli("export-hf-ok", "export", "ok", "export RUN x --format hf --task sst (right: config.json in x)",
    lambda d: ["export", str(FX["run"]), str(d / "x"), "--format", "hf", "--task", "sst"],
    check=lambda d, o, e: None if (d / "x" / "config.json").is_file() else "no config.json")  # fmt: skip

# ---------------------------------------------------------------- predict

SST_DEV_HEAD = b"".join((DATA / "ids-sst-dev.csv").read_bytes().splitlines(keepends=True)[:6])


def _predict(content: bytes, task="sst", *flags, name="in.txt"):
    return lambda d: ["predict", str(FX["run"]), "--task", task, "--input", str(write(d / name, content)), *flags]


def _n_preds(n):
    return lambda d, o, e: None if len(jsonl_lines(o)) == n else f"{len(jsonl_lines(o))} predictions, not {n}"


cli(
    "predict-cs224n-header",
    "predict",
    "either",
    "predict --task sst --input ids-sst-dev.csv head (header + 5 rows)",
    _predict(SST_DEV_HEAD, name="ids-sst-dev.csv"),
    ["ids-sst-dev.csv"],
    check=lambda d, o, e: (
        None
        if len(jsonl_lines(o)) == 5
        and not any("sentiment" in str(p["input"]) and "sentence" in str(p["input"]) for p in jsonl_lines(o))
        else f"{len(jsonl_lines(o))} predictions for 5 rows; the header and the id column were read as sentences"
    ),
)
cli("predict-sst-tab-pairs", "predict", "either", "predict --task sst --input <tab-separated pairs>",
    _predict(b"a fine film\ta good movie\nboring\tdull\n"), ["in.txt"], check=_n_preds(2))  # fmt: skip
cli("predict-sts-three-fields", "predict", "error", "predict --task sts --input <a line with 3 tab fields>",
    _predict(b"a\tb\n1\t2\t3\n", "sts"), ["in.txt:2"])  # fmt: skip
cli("predict-sts-single", "predict", "error", "predict --task sts --input <one sentence per line>",
    _predict(b"just one sentence\n", "sts"), ["in.txt:1"])  # fmt: skip
cli("predict-empty", "predict", "either", "predict --task sst --input <empty file>", _predict(b""), ["in.txt"],
    check=_n_preds(0))  # fmt: skip
cli("predict-blank-lines", "predict", "either", "predict --task sst --input <only blank lines>",
    _predict(b"\n  \n\t\n"), ["in.txt"], check=_n_preds(0))  # fmt: skip
cli("predict-binary", "predict", "error", "predict --task sst --input <PNG bytes>",
    _predict(b"\x89PNG\r\n\x1a\n" + bytes(range(256)), name="img.png"), ["img.png"])  # fmt: skip
cli("predict-latin1", "predict", "error", "predict --task sst --input <Latin-1 text>",
    _predict("un film tr\xe8s beau\n".encode("latin-1")), ["in.txt"])  # fmt: skip
cli("predict-utf16", "predict", "error", "predict --task sst --input <UTF-16 text>",
    _predict("a fine film\n".encode("utf-16")), ["in.txt"])  # fmt: skip
cli("predict-huge-line", "predict", "ok", "predict --task sst --input <one 2 MB line> (right: one prediction)",
    _predict(b"good " * 400_000 + b"\n"), check=_n_preds(1))  # fmt: skip
cli(
    "predict-input-folder",
    "predict",
    "error",
    "predict --task sst --input <a folder>",
    lambda d: (d / "in").mkdir() or ["predict", str(FX["run"]), "--task", "sst", "--input", str(d / "in")],
    ["in"],
)
cli("predict-jsonl-wrong-keys", "predict", "error", 'predict --task sts --input <{"text": "a"}>',
    _predict(b'{"text": "a"}\n', "sts", name="in.jsonl"), ["in.jsonl:1"])  # fmt: skip
cli("predict-no-task", "predict", "error", "predict RUN --input f (no --task)",
    lambda d: ["predict", str(FX["run"]), "--input", str(write(d / "in.txt", "fine\n"))], ["--task"])  # fmt: skip
cli("predict-task-unknown", "predict", "error", "predict RUN --task imdb --input f", _predict(b"fine\n", "imdb"),
    ["imdb"])  # fmt: skip
cli("predict-task-without-input", "predict", "either", "predict RUN --task sst (no --input) --out p (or warned)",
    lambda d: ["predict", str(FX["run"]), "--task", "sst", "--out", str(d / "p")], ["--task"],
    check=warned("--task"))  # fmt: skip
cli("predict-format-without-input", "predict", "either", "predict RUN --format csv --out p (no --input; or warned)",
    lambda d: ["predict", str(FX["run"]), "--format", "csv", "--out", str(d / "p")], ["--format"],
    check=warned("--format"))  # fmt: skip
cli("predict-out-is-input", "predict", "error", "predict --input f --out f --overwrite (the same file)",
    lambda d: ["predict", str(FX["run"]), "--task", "sst", "--input", str(write(d / "f.txt", "a fine film\n")),
               "--out", str(d / "f.txt"), "--overwrite"], ["f.txt"])  # fmt: skip
cli("predict-out-run-root", "predict", "either", "predict RUN --out RUN (the run folder itself)",
    lambda d: ["predict", str(copy_run(d)), "--out", str(d / "run")], ["run"],
    check=lambda d, o, e: None)  # fmt: skip
cli("predict-crlf", "predict", "ok", "predict --task sst --input <CRLF lines> (right: no \\r in the inputs)",
    _predict(b"a fine film\r\nboring\r\n"),
    check=lambda d, o, e: None if len(jsonl_lines(o)) == 2 and not any("\r" in p["input"] for p in jsonl_lines(o))
    else "a \\r stayed in the sentence, or wrong count")  # fmt: skip
cli("predict-bom", "predict", "ok", "predict --task sst --input <UTF-8 with BOM> (right: the BOM is not text)",
    _predict("\ufeffa fine film\n".encode()),
    check=lambda d, o, e: None if jsonl_lines(o) and not jsonl_lines(o)[0]["input"].startswith("\ufeff")
    else "the byte-order mark became part of the first sentence")  # fmt: skip
cli("predict-csv-pairs-ok", "predict", "ok", "predict --task quora --input pairs --format csv (right: header, 2 rows)",
    _predict(b"how are you\thow do you do\nwhat\twho\n", "quora", "--format", "csv"),
    check=lambda d, o, e: None if o.splitlines()[0].startswith("sentence1,sentence2") and len(o.splitlines()) == 3
    else "wrong CSV: " + o[:120])  # fmt: skip
cli("predict-data-dir-file", "predict", "error", "predict RUN --data-dir <a file> --out p",
    lambda d: ["predict", str(FX["run"]), "--data-dir", str(write(d / "f.txt", "x")), "--out", str(d / "p")],
    ["f.txt"])  # fmt: skip
cli("predict-stdin-latin1", "predict", "error", "printf 'caf\\xe9' | predict --task sst --input -",
    lambda d: (["predict", str(FX["run"]), "--task", "sst", "--input", "-"], "caf\xe9 film\n".encode("latin-1")),
    ["stdin"], real=True)  # fmt: skip
cli("predict-stdin-ok", "predict", "ok", "printf 'fine\\nbad' | predict --task sst --input - (right: 2 predictions)",
    lambda d: (["predict", str(FX["run"]), "--task", "sst", "--input", "-"], b"fine\nbad\n"), check=_n_preds(2),
    real=True)  # fmt: skip
cli(
    "predict-int8-ok",
    "predict",
    "ok",
    "predict RUN --precision int8 --out p (right: the 5 files)",
    lambda d: ["predict", str(FX["run"]), "--precision", "int8", "--out", str(d / "p")],
    check=lambda d, o, e: None if len(list((d / "p").glob("*.csv"))) == 5 else "not 5 prediction files",
)

# ---------------------------------------------------------------- evaluate


def _cfg_edit(d, old, new):
    run = copy_run(d)
    text = (run / "config.yaml").read_text()
    assert old in text, old
    (run / "config.yaml").write_text(text.replace(old, new, 1))
    return run


cli(
    "evaluate-best-folder-gone",
    "evaluate",
    "either",
    "evaluate RUN whose best.json names a missing folder",
    lambda d: ["evaluate", str(_run_with(d, "best.json", '{"folder": "best-00000099", "step": 99}'))],
    ["best"],
    check=lambda d, o, e: None if "sst/acc" in o else "no dev metrics",
    changes=("run/best.json",),
)
cli("evaluate-config-unknown-key", "evaluate", "error", "evaluate RUN whose config.yaml has a hand-added key",
    lambda d: ["evaluate", str(_cfg_edit(d, "epochs:", "colour: red\nepochs:"))], ["colour"])  # fmt: skip
cli(
    "evaluate-checkpoint-moved",
    "evaluate",
    "error",
    "evaluate RUN whose config.yaml's checkpoint is gone",
    lambda d: ["evaluate", str(_cfg_edit(d, f"checkpoint: {FX['enc']}", f"checkpoint: {d / 'moved'}"))],
    ["moved"],
)
cli("evaluate-file", "evaluate", "error", "evaluate <a file>", lambda d: ["evaluate", str(write(d / "r.txt", "x"))],
    ["r.txt"])  # fmt: skip
cli("evaluate-no-dev-file", "evaluate", "error", "evaluate RUN --data-dir <copy without ids-sst-dev.csv>",
    lambda d: ["evaluate", str(FX["run"]), "--data-dir", str(replace_data(d, "ids-sst-dev.csv", None))],
    ["ids-sst-dev.csv"])  # fmt: skip
cli("evaluate-int8-ok", "evaluate", "ok", "evaluate RUN --precision int8 (right: dev metrics printed)",
    lambda d: ["evaluate", str(FX["run"]), "--precision", "int8"],
    check=lambda d, o, e: None if "sst/acc" in o + e else "no dev metrics in the output")  # fmt: skip
cli("evaluate-head-changed", "evaluate", "error", "evaluate RUN whose config.yaml says sst head concat (edited)",
    lambda d: ["evaluate", str(_cfg_edit(d, "head: linear", "head: cosine"))], ["sst"])  # fmt: skip

# ---------------------------------------------------------------- classify


def _classify(*flags):
    return lambda d: ["classify", "--checkpoint", str(FX["enc"]), *flags, "--out", str(d / "c")]


cli("classify-epochs-neg", "classify", "error", "classify --epochs -1", _classify("--epochs", "-1"), ["--epochs"])
cli("classify-lr-nan", "classify", "error", "classify --lr nan", _classify("--lr", "nan"), ["--lr"])
cli("classify-dropout-1", "classify", "error", "classify --dropout 1", _classify("--dropout", "1"), ["--dropout"])
cli("classify-threads-neg", "classify", "error", "classify --threads -1", _classify("--threads", "-1"), ["--threads"])
cli("classify-train-limit-neg", "classify", "error", "classify --train-limit -5", _classify("--train-limit", "-5"),
    ["--train-limit"])  # fmt: skip
cli("classify-unknown-key", "classify", "error", "classify colour=red", _classify("colour=red"), ["colour"])
cli(
    "classify-config-missing",
    "classify",
    "error",
    "classify --config missing.yaml",
    lambda d: ["classify", "--config", str(d / "missing.yaml"), "--out", str(d / "c")],
    ["missing.yaml"],
)
cli("classify-checkpoint-missing", "classify", "error", "classify --checkpoint <missing>",
    lambda d: ["classify", "--checkpoint", str(d / "ck"), "--out", str(d / "c")], ["ck"])  # fmt: skip
cli("classify-out-notes", "classify", "either", "classify --out <a folder of my notes> (right: notes kept)",
    lambda d: write(d / "c" / "notes.txt", "mine") and _classify("--max-steps", "1", "--train-limit", "8",
                                                                "--eval-limit", "8")(d), ["c"],
    check=lambda d, o, e: None if (d / "c" / "notes.txt").read_text() == "mine" else "notes.txt changed")  # fmt: skip
cli("classify-overwrite-notes", "classify", "either", "classify --out <my notes> --overwrite (right: notes kept)",
    lambda d: write(d / "c" / "notes.txt", "mine") and _classify("--max-steps", "1", "--train-limit", "8",
                                                                "--eval-limit", "8", "--overwrite")(d), ["c"],
    check=lambda d, o, e: None if (d / "c" / "notes.txt").read_text() == "mine" else "notes.txt changed")  # fmt: skip
cli(
    "classify-config-list",
    "classify",
    "error",
    "classify --config <a YAML list>",
    lambda d: ["classify", "--config", str(write(d / "c.yaml", "- 1\n")), "--out", str(d / "c")],
    ["c.yaml"],
)

# ---------------------------------------------------------------- train outputs and resume


def _unfinished(d, name="run", src="run"):
    run = copy_run(d, name, src)
    (run / "summary.json").unlink()
    return run


cli("train-overwrite-notes", "train-out", "either", "train out=<a folder of my notes> --overwrite (right: notes kept)",
    lambda d: write(d / "run" / "notes.txt", "mine") and train("--overwrite")(d), ["run"],
    check=lambda d, o, e: None if (d / "run" / "notes.txt").read_text() == "mine" else "notes.txt changed")  # fmt: skip
cli("train-out-notes", "train-out", "either", "train out=<a folder of my notes> (right: notes kept)",
    lambda d: write(d / "run" / "notes.txt", "mine") and train()(d), ["run"],
    check=lambda d, o, e: None if (d / "run" / "notes.txt").read_text() == "mine" else "notes.txt changed")  # fmt: skip
cli("train-out-data-dir", "train-out", "either", "train out=<the data folder> --overwrite (right: data kept)",
    lambda d: train("--overwrite", out="data")(d) if data_copy(d) else [], ["data"],
    check=lambda d, o, e: None)  # fmt: skip
cli("train-out-checkpoint", "train-out", "either", "train out=<the checkpoint folder> --overwrite (right: kept)",
    lambda d: (shutil.copytree(FX["enc"], d / "ck"), train("--overwrite", out="ck")(d))[1], ["ck"],
    check=lambda d, o, e: None)  # fmt: skip


def _run_outputs(folder):
    """What a training run writes in its folder: an --overwrite may replace these, and only these."""
    names = ("checkpoints", "metrics.jsonl", "summary.json", "best.json", "last.json", "predictions", "config.yaml")
    return tuple(f"{folder}/{n}" for n in names)


def _trained_once(d, out, extra=()):
    """Setup: one tiny training run into d/out (which holds the user's files), as the user's first command."""
    argv = train(*extra, out=out)(d)
    rc = run_forked(_cli_main(argv), d, d.parent / f".{d.name}.pre.out", d.parent / f".{d.name}.pre.err", TIMEOUT)
    assert rc == 0, (d.parent / f".{d.name}.pre.err").read_text()[-500:]
    return train("--overwrite", out=out)(d)


cli("train-overwrite-twice-notes", "train-out", "error",
    "train out=<my notes folder> (a later --overwrite would empty it: right: refused up front)",
    lambda d: write(d / "run" / "notes.txt", "mine") and train(out="run")(d), ["run", "not a run's"])  # fmt: skip
cli("train-overwrite-twice-data", "train-out", "error",
    "train out=<the data folder> (a later --overwrite would empty it: right: refused up front)",
    lambda d: data_copy(d) and train(f"data_dir={d / 'data'}", out="data")(d), ["data", "not a run's"])  # fmt: skip
cli("train-out-inside-run", "train-out", "error", "train out=RUN/checkpoints --overwrite",
    lambda d: (copy_run(d), train("--overwrite", out="run/checkpoints")(d))[1], ["checkpoints"])  # fmt: skip
cli("resume-no-config", "resume", "error", "train --resume <folder without config.yaml>",
    lambda d: write(d / "r" / "x.txt", "x") and ["train", "--resume", str(d / "r")], ["config.yaml"])  # fmt: skip
cli("resume-finished", "resume", "either", "train --resume RUN (finished)",
    lambda d: ["train", "--resume", str(copy_run(d))], ["run"], check=lambda d, o, e: None)  # fmt: skip
cli(
    "resume-with-override",
    "resume",
    "either",
    "train --resume RUN(unfinished) epochs=5 (right: refused or warned)",
    lambda d: ["train", "--resume", str(_unfinished(d)), "epochs=5"],
    ["epochs"],
    check=warned("overrides"),
)
cli("resume-with-config", "resume", "either", "train quickstart.yaml --resume RUN(unfinished) (refused or warned)",
    lambda d: ["train", str(QUICKSTART), "--resume", str(_unfinished(d))], ["resume"],
    check=warned("quickstart.yaml"))  # fmt: skip
cli("resume-with-checkpoint", "resume", "either", "train --resume RUN(unfinished) --checkpoint <another> (or warned)",
    lambda d: ["train", "--resume", str(_unfinished(d)), "--checkpoint", str(d / "other")], ["checkpoint"],
    check=warned("checkpoint"))  # fmt: skip
cli("resume-metrics-damaged", "resume", "error", "train --resume RUN(unfinished, metrics.jsonl damaged mid-file)",
    lambda d: ["train", "--resume", str(_metrics_damaged(d))], ["metrics.jsonl"])  # fmt: skip
cli("resume-last-json-list", "resume", "either", "train --resume RUN(unfinished, last.json = []) (recovery: rebuilt)",
    lambda d: ["train", "--resume", str(_last_list(d))], ["last.json"], changes=("run/last.json",),
    check=lambda d, o, e: None if (d / "run" / "summary.json").is_file() else "no summary.json")  # fmt: skip
cli("resume-state-json-garbage", "resume", "either", "train --resume RUN(unfinished; every state.json garbage)",
    lambda d: ["train", "--resume", str(_states_garbage(d))], ["state.json"],
    check=lambda d, o, e: None if (d / "run" / "summary.json").is_file() else "no summary.json")  # fmt: skip
cli("resume-config-garbage", "resume", "error", "train --resume RUN(unfinished; config.yaml cut off)",
    lambda d: ["train", "--resume", str(_cfg_cut(d))], ["config.yaml"])  # fmt: skip
cli(
    "resume-data-dir-flag-missing",
    "resume",
    "error",
    "train --resume RUN(unfinished) --data-dir <missing>",
    lambda d: ["train", "--resume", str(_unfinished(d)), "--data-dir", str(d / "nodata")],
    ["nodata"],
)


def _metrics_damaged(d):
    run = _unfinished(d)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[2] = lines[2][:10] + "\n"
    (run / "metrics.jsonl").write_text("".join(lines))
    return run


def _last_list(d):
    run = _unfinished(d)
    (run / "last.json").write_text("[]")
    return run


def _states_garbage(d):
    run = _unfinished(d)
    for p in (run / "checkpoints").glob("last-*/state.json"):
        p.write_text("{garbage")
    return run


def _cfg_cut(d):
    run = _unfinished(d)
    p = run / "config.yaml"
    p.write_bytes(p.read_bytes()[:200])
    return run


# ---------------------------------------------------------------- Python API (each call in its own child process)


def _m(d=None, run="run", **kw):
    import minbert

    return minbert.load(FX[run], **kw)


def _is_len(n):
    return lambda v, d: None if len(v) == n else f"{len(v)} results, not {n}"


api("api-device-meta", "error", "load(RUN, device='meta')", lambda d: _m(device="meta"), ["device", "meta"])
api("api-device-space", "error", "load(RUN, device=' cpu')", lambda d: _m(device=" cpu"), ["device"])
api("api-device-cpu0", "ok", "load(RUN, device='cpu:0') (a valid torch device)",
    lambda d: _m(device="cpu:0").predict("sst", ["fine"]), check=_is_len(1))  # fmt: skip
api("api-device-torch-cuda", "error", "load(RUN, device=torch.device('cuda')) on a CPU machine",
    lambda d: _m(device=__import__("torch").device("cuda")), ["cuda"])  # fmt: skip
api("api-precision-upper", "error", "load(RUN, precision='FP32')", lambda d: _m(precision="FP32"), ["FP32"])
api("api-precision-list", "error", "load(RUN, precision=['fp32'])", lambda d: _m(precision=["fp32"]), ["precision"])
api("api-load-file", "error", "load(<a file>)",
    lambda d: __import__("minbert").load(write(d / "r.txt", "x")), ["r.txt"])  # fmt: skip
api("api-load-trailing-slash", "ok", "load(str(RUN) + '/')",
    lambda d: __import__("minbert").load(str(FX["run"]) + "/").tasks,
    check=lambda v, d: None if v == ["sst", "quora", "sts"] else f"tasks {v}")  # fmt: skip
api("api-load-best-garbage", "either", "load(RUN with best.json garbage) (recovery: rebuilt)",
    lambda d: __import__("minbert").load(_run_with(d, "best.json", "{garbage")).tasks, ["best"],
    check=lambda v, d: None if v == ["sst", "quora", "sts"] else f"tasks {v}")  # fmt: skip
api("api-load-truncated", "error", "load(RUN with the best weights cut short)",
    lambda d: __import__("minbert").load(_cut_best(d)), ["model.safetensors"])  # fmt: skip
api("api-empty-list", "ok", "predict('sst', [])", lambda d: _m().predict("sst", []), check=_is_len(0))
api(
    "api-batch-np-neg",
    "error",
    "predict('sst', ['x'], batch_size=np.int64(-1))",
    lambda d: _m().predict("sst", ["x"], batch_size=__import__("numpy").int64(-1)),
    ["batch_size", "-1"],
)
api(
    "api-batch-np-bool",
    "error",
    "predict('sst', ['x'], batch_size=np.bool_(True))",
    lambda d: _m().predict("sst", ["x"], batch_size=__import__("numpy").bool_(True)),
    ["batch_size"],
)
api("api-batch-none", "error", "predict('sst', ['x'], batch_size=None)",
    lambda d: _m().predict("sst", ["x"], batch_size=None), ["batch_size"])  # fmt: skip
api("api-batch-huge-ok", "ok", "predict('quora', 3 pairs, batch_size=10**100)",
    lambda d: _m().predict("quora", [("a", "b")] * 3, batch_size=10**100), check=_is_len(3))  # fmt: skip
api("api-bytes-input", "error", "predict('sst', [b'bytes'])", lambda d: _m().predict("sst", [b"bytes"]),
    ["sst input 1"])  # fmt: skip
api("api-empty-string", "either", "predict('sst', [''])", lambda d: _m().predict("sst", [""]), ["sst input 1"],
    check=_is_len(1))  # fmt: skip
api("api-pair-none", "error", "predict('sts', [('a', None)])", lambda d: _m().predict("sts", [("a", None)]),
    ["sts input 1"])  # fmt: skip
api("api-pair-list-ok", "ok", "predict('sts', [['a', 'b']])", lambda d: _m().predict("sts", [["a", "b"]]),
    check=_is_len(1))  # fmt: skip
api("api-sst-tuple-ok", "ok", "predict('sst', ('a', 'b')) (two sentences)", lambda d: _m().predict("sst", ("a", "b")),
    check=_is_len(2))  # fmt: skip
api("api-embed-task-unknown", "error", "embed(['a'], task='nope')", lambda d: _m().embed(["a"], task="nope"),
    ["nope"])  # fmt: skip
api("api-embed-batch-0", "error", "embed(['a'], batch_size=0)", lambda d: _m().embed(["a"], batch_size=0),
    ["batch_size"])  # fmt: skip
api("api-embed-none", "error", "embed(None)", lambda d: _m().embed(None), ["None"])
api("api-task-none", "error", "predict(None, ['x'])", lambda d: _m().predict(None, ["x"]), ["task"])
api("api-task-upper", "error", "predict('SST', ['x'])", lambda d: _m().predict("SST", ["x"]), ["SST"])
api("api-huge-sentence", "ok", "predict('sst', ['good ' * 200000])",
    lambda d: _m().predict("sst", ["good " * 200_000]), check=_is_len(1))  # fmt: skip
api("api-nul-char", "either", "predict('sst', ['a\\x00b'])", lambda d: _m().predict("sst", ["a\x00b"]),
    ["sst input 1"], check=_is_len(1))  # fmt: skip
api("api-numpy-strings", "ok", "predict('sst', np.array(['a', 'b']))",
    lambda d: _m().predict("sst", __import__("numpy").array(["a", "b"])), check=_is_len(2))  # fmt: skip
api("api-numpy-pairs", "either", "predict('sts', np.array([['a', 'b']]))",
    lambda d: _m().predict("sts", __import__("numpy").array([["a", "b"]])), ["sts input 1"],
    check=_is_len(1))  # fmt: skip
api("api-int8-sts", "ok", "load(RUN, precision='int8').predict('sts', pair)",
    lambda d: _m(precision="int8").predict("sts", [("a man", "a person")]),
    check=lambda v, d: None if len(v) == 1 and 0 <= v[0]["score"] <= 5 else f"{v}")  # fmt: skip
api("api-lora-ok", "ok", "load(LORA).predict('sst', 2 sentences)",
    lambda d: _m(run="lora").predict("sst", ["fine", "bad"]), check=_is_len(2))  # fmt: skip
api("api-surrogate-task", "error", "predict('\\ud800', ['x'])", lambda d: _m().predict("\ud800", ["x"]), ["task"])
api("api-generator-error", "error", "predict('sst', a generator yielding 'a' then 3)",
    lambda d: _m().predict("sst", (x for x in ["a", 3])), ["sst input 2"])  # fmt: skip
api("api-set-input", "either", "predict('sst', {'a', 'b'}) (a set: order undefined)",
    lambda d: _m().predict("sst", {"a", "b"}), ["set"], check=_is_len(2))  # fmt: skip
api(
    "api-float-batch-np",
    "error",
    "predict('sst', ['x'], batch_size=np.float32(2))",
    lambda d: _m().predict("sst", ["x"], batch_size=__import__("numpy").float32(2)),
    ["batch_size"],
)


# --------------------------------------------------------------------------------------------------------------------
# running


def snapshot(root: Path) -> dict[str, str]:
    """Every file (and symlink) under root: a digest of its bytes; folders as 'dir'."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            h = hashlib.sha1()
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[rel] = h.hexdigest()
        elif p.is_dir():
            out[rel] = "dir"
    return out


def _child_exit(code):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run_forked(fn, d: Path, out_path: Path, err_path: Path, timeout: int, stdin: bytes | None = None) -> int:
    """fn() in a forked child with stdout/stderr to files; its return value (an int) is the exit status. An
    uncaught exception prints its traceback and exits 1, as Python does."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.chdir(d)
            for fd, path, mode in ((1, out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                   (2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):  # fmt: skip
                f = os.open(path, mode, 0o644)
                os.dup2(f, fd)
                os.close(f)
            sin = d.parent / f".{d.name}.stdin"
            sin.write_bytes(stdin or b"")
            f = os.open(sin, os.O_RDONLY)
            os.dup2(f, 0)
            os.close(f)
            sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False))
            sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True)
            sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True)
            _limit_memory()  # a runaway case fails, not the machine
            signal.alarm(timeout)
            code = fn()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - what Python prints for an uncaught exception
            traceback.print_exc()
            code = 1
        _child_exit(code if isinstance(code, int) else 0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY, MEMORY))


def _cli_main(argv):
    from minbert.cli import main

    return lambda: main([str(a) for a in argv])


def run_case(case: Case, root: Path, use_subprocess: bool) -> dict:
    d = root / case.id
    d.mkdir(parents=True)
    rec = {"id": case.id, "surface": case.surface, "what": case.what, "expect": case.expect, "parts": case.parts}
    t0 = time.time()
    try:
        if case.api:
            fn = case.setup
            stdin = None
        else:
            got = case.setup(d)
            argv, stdin = got if isinstance(got, tuple) else (got, None)
            rec["argv"] = [str(a) for a in argv]
    except Exception:  # noqa: BLE001 - a broken case is ours, reported as such
        rec.update(outcome="case-error", line=traceback.format_exc().strip().splitlines()[-1], out="", err="")
        return rec
    before = snapshot(d)
    out_path, err_path = root / f".{case.id}.out", root / f".{case.id}.err"
    env = {**os.environ, "MINBERT_DATA": str(DATA), "PYTHONPATH": str(REPO / "src")}
    if case.api:
        result_path = root / f".{case.id}.json"

        def child():
            from minbert.errors import MinbertError

            try:
                value = fn(d)
            except MinbertError as e:
                result_path.write_text(json.dumps({"kind": "error", "message": str(e)}))
                return 2
            why = case.check(value, d) if case.check else None
            result_path.write_text(json.dumps({"kind": "ok", "why": why, "value": repr(value)[:300]}))
            return 0

        rc = run_forked(child, d, out_path, err_path, case.timeout)
        out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
        res = json.loads(result_path.read_text()) if result_path.is_file() else {"kind": "traceback"}
        if res["kind"] == "error":
            err = f"minbert: error: {res['message']}\n" + err  # as the CLI would print it
        rec["api_result"] = res
    elif use_subprocess or case.real:
        try:
            done = subprocess.run([sys.executable, "-m", "minbert", *rec["argv"]], input=stdin or b"", cwd=d, env=env,
                                  capture_output=True, timeout=case.timeout, preexec_fn=_limit_memory)  # fmt: skip
            rc, out, err = done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            rc, out, err = 124, (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace")
    else:
        os.environ["MINBERT_DATA"] = str(DATA)
        rc = run_forked(_cli_main(rec["argv"]), d, out_path, err_path, case.timeout, stdin)
        out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    rec.update(rc=rc, seconds=round(time.time() - t0, 1), out=out[-6000:], err=err[-6000:])
    after = snapshot(d)
    rec["outcome"], rec["why"] = classify(case, rc, out, err, before, after, d, rec.get("api_result"))
    lines = error_lines(err)
    rec["line"] = lines[0] if lines else ""
    return rec


def error_lines(err: str) -> list[str]:
    import re

    return [x for x in err.splitlines() if re.match(r"minbert( [a-z-]+)?: error:", x)]


def classify(case, rc, out, err, before, after, d, api_result) -> tuple[str, str]:
    changed = [k for k, v in before.items() if k not in after or (after[k] != v and not v == "dir")]
    changed = [k for k in changed if not any(k == c or k.startswith(c + "/") for c in case.changes)]
    text = out + err
    if rc in (-signal.SIGALRM, 124, 137, -9) or (case.api and api_result is None):
        return "hang", f"no answer within {case.timeout}s (rc {rc})"
    if "Traceback (most recent call last)" in text or (rc not in (0, 2) and rc != 130):
        return "traceback", f"exit {rc}"
    if changed:
        return "lost-work", "changed or gone: " + ", ".join(changed[:5])
    lines = error_lines(err)
    if rc == 2:
        if case.expect == "ok":
            return "wrong-refusal", "a valid input was refused"
        if len(lines) != 1:
            return "unclear", f"{len(lines)} error lines"
        missing = [p for p in case.parts if p not in lines[0]]
        if missing:
            return "unclear", "the line does not name " + ", ".join(map(repr, missing))
        new = [k for k in after if k not in before]
        if new and not (case.allow_new or case.api):
            return "leftover", "left behind: " + ", ".join(new[:5])
        return "one-line", ""
    if rc == 0:
        if case.expect == "error":
            return "silent-wrong", "exit 0: the bad input was accepted"
        if case.api:
            why = api_result.get("why")
        else:
            try:
                why = case.check(d, out, err) if case.check else None
            except Exception as e:  # noqa: BLE001 - a check that cannot read what it expects: wrong result
                why = f"check failed: {type(e).__name__}: {e}"
        return ("silent-wrong", why) if why else ("ok", "")
    return "traceback", f"exit {rc}"


# --------------------------------------------------------------------------------------------------------------------
# fixtures


def build_fixtures(root: Path) -> None:
    fx = root / "fixtures"
    fx.mkdir()
    FX["enc"] = fx / "enc"

    def encoder():
        import torch

        from minbert.model import BertConfig, BertModel, default_checkpoint_dir
        from minbert.runs import save_tensors

        dest = FX["enc"]
        dest.mkdir()
        torch.manual_seed(0)
        cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        save_tensors(dest / "model.safetensors", BertModel(cfg).state_dict())
        (dest / "config.json").write_text(cfg.to_json())
        shutil.copy(default_checkpoint_dir() / "vocab.txt", dest / "vocab.txt")
        return 0

    assert run_forked(encoder, fx, fx / "enc.out", fx / "enc.err", 300) == 0, (fx / "enc.err").read_text()
    base = [str(QUICKSTART), *TINY, f"checkpoint={FX['enc']}"]
    for name, extra in (("run", []), ("sst", [SST_ONLY]), ("lora", ["lora.enabled=true"])):
        FX[name] = fx / name
        argv = ["train", *base, *extra, f"out={FX[name]}"]
        rc = run_forked(_cli_main(argv), fx, fx / f"{name}.out", fx / f"{name}.err", 600)
        assert rc == 0 and (FX[name] / "summary.json").is_file(), (fx / f"{name}.err").read_text()[-3000:]


# --------------------------------------------------------------------------------------------------------------------
# report

FAILURES = ("traceback", "silent-wrong", "unclear", "lost-work", "leftover", "wrong-refusal", "hang", "case-error")


def report(records: list[dict], out_md: Path, seconds: float) -> None:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    order = ["one-line", "ok", *FAILURES]
    summary = ", ".join(f"{k} {counts[k]}" for k in order if k in counts)
    fails = [r for r in records if r["outcome"] in FAILURES]

    def cell(s: str, n: int = 160) -> str:
        s = " ".join(str(s).split())
        s = s if len(s) <= n else s[: n - 1] + "…"
        return s.replace("|", "\\|")

    rows = [
        "# Bad input, round 2 (issue 41)",
        "",
        f"**{len(records)} cases: {summary}** ({len(fails)} failures; {seconds:.0f} s;"
        f" `MINBERT_DATA={DATA} taskset -c 1 python scripts/bad_inputs.py`)",
        "",
        "Written by scripts/bad_inputs.py (its docstring says what each outcome means); the full output of every case"
        f" is in {out_md.with_suffix('.json').name}.",
        "",
        "| id | surface | command or call | expected | outcome | error line (or why it failed) |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        line = r.get("line") or ""
        if r["outcome"] in FAILURES and r.get("why"):
            line = f"{r['why']} — {line}" if line else r["why"]
        if r["outcome"] == "traceback" and not r.get("line"):
            tail = [x for x in (r.get("err", "") + r.get("out", "")).splitlines() if x.strip()]
            line = f"{r.get('why', '')}: {tail[-1] if tail else ''}"
        outcome = f"**{r['outcome']}**" if r["outcome"] in FAILURES else r["outcome"]
        rows.append(f"| {r['id']} | {r['surface']} | `{cell(r['what'], 90)}` | {r['expect']} | {outcome} | "
                    f"{cell(line)} |")  # fmt: skip
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(rows) + "\n")
    out_md.with_suffix(".json").write_text(json.dumps(records, indent=1, default=str) + "\n")
    print(f"\n{len(records)} cases: {summary}")
    for r in fails:
        print(f"  {r['outcome']:13} {r['id']}: {cell(r.get('why', ''), 100)} | {cell(r.get('line', ''), 140)}")
    print(f"wrote {out_md} and {out_md.with_suffix('.json')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the cases whose id contains this")
    ap.add_argument("--jobs", type=int, default=1, help="cases at once (each a child process)")
    ap.add_argument("--subprocess", action="store_true", help="real `python -m minbert` processes for CLI cases")
    ap.add_argument("--keep", default="", help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    if not (DATA / "ids-sst-dev.csv").is_file():
        sys.exit(f"bad_inputs.py: CS224N data not found at {DATA}: set MINBERT_DATA")
    os.environ["MINBERT_DATA"] = str(DATA)
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    cases = [c for c in CASES if args.only in c.id]
    t0 = time.time()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        import minbert.api  # noqa: F401
        import minbert.cli  # noqa: F401 - imported once here; every forked case starts from it

        print(f"{len(cases)} cases; building fixtures in {root}", flush=True)
        build_fixtures(root)
        fixtures_before = {k: snapshot(v) for k, v in FX.items()}
        print(f"fixtures ready ({time.time() - t0:.0f} s)", flush=True)
        work = root / "cases"
        work.mkdir()
        records = []
        if args.jobs > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(args.jobs) as pool:  # each case is its own process; threads only wait
                for r in pool.map(lambda c: run_case(c, work, args.subprocess), cases):
                    records.append(r)
                    print(f"{r['outcome']:13} {r['id']} ({r.get('seconds', 0)} s)", flush=True)
        else:
            for c in cases:
                r = run_case(c, work, args.subprocess)
                records.append(r)
                print(f"{r['outcome']:13} {r['id']} ({r.get('seconds', 0)} s)", flush=True)
        for k, v in FX.items():
            if snapshot(v) != fixtures_before[k]:
                print(f"WARNING: fixture {k} changed during the run (a case wrote into a shared fixture)")
        folder = Path(tempfile.gettempdir()) if args.only else REPO / "docs" / "study"
        report(records, folder / f"bad-inputs-round2{'-only' if args.only else ''}.md", time.time() - t0)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
