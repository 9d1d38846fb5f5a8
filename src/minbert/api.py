"""Use what you trained: `minbert.load(RUN_DIR)` gives the run's best checkpoint as a model that predicts every task
it was trained on, from plain text.

    import minbert
    m = minbert.load("runs/best-...")
    m.tasks                                   # ["sst", "quora", "sts"]
    m.predict("sst", ["a gorgeous, witty film", "a tedious mess"])
    m.predict("sts", [("a man plays guitar", "a person plays a guitar")])
    m.embed(["a gorgeous, witty film"])       # (1, H) sentence embeddings

Prediction runs under `torch.inference_mode`, batched and length-bucketed, in the run's precision ("auto": bf16 where
the hardware has it).
"""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from minbert.data import Example
from minbert.errors import MinbertError
from minbert.files import read_text
from minbert.multitask.data import encode_task
from minbert.multitask.run import LoadedRun, load_run, load_run_config
from minbert.multitask.runner import INFERENCE_PRECISIONS
from minbert.runs import pick_device
from minbert.tasks import Task

Inputs = Sequence[str] | Sequence[tuple[str, str]]


class Model:
    """A trained multitask run: `predict(task, inputs)`, `embed(sentences)`, `tasks`."""

    def __init__(self, run: LoadedRun):
        self.run = run

    @property
    def tasks(self) -> list[str]:
        return list(self.run.cfg.tasks)

    @property
    def specs(self) -> dict[str, Task]:
        """Each task's definition (its metric, labels, whether it reads pairs)."""
        return self.run.model.specs

    def predict(self, task: str, inputs: Inputs, batch_size: int = 64) -> list[dict]:
        """One dict per input: a classification task gives its "label" and the "probabilities" of every class (a
        two-class task the "probability" of 1), a regression task its "score" on the label scale (STS: 0..5)."""
        soft = self.soft(task, inputs, batch_size)
        spec = self.specs[task]
        names = spec.dataset.written_names
        if soft.dim() == 2:  # class probabilities (N, C)
            out = [{"label": int(p.argmax()), "probabilities": [round(float(x), 6) for x in p]} for p in soft]
        elif spec.regression:
            return [{"score": round(float(s), 6)} for s in soft]
        else:
            out = [{"label": int(s > 0.5), "probability": round(float(s), 6)} for s in soft]
        return [{**o, "name": names[o["label"]]} for o in out] if names else out

    def soft(self, task: str, inputs: Inputs, batch_size: int = 64) -> torch.Tensor:
        """What ensembles average (Task.soft): class probabilities (N, C), P(1) (N,), or the score (N,)."""
        batch_size = self._check(task, batch_size)
        spec = self.specs[task]
        examples = [_example(i, x, spec.pair, task) for i, x in enumerate(as_inputs(inputs, spec.pair, task))]
        if not examples:
            return torch.empty(0)
        data = encode_task(spec, examples, self.run.tok, self.run.cfg.task(task))
        return self.run.runner.soft(task, data, min(batch_size, len(examples)))

    @torch.inference_mode()
    def embed(self, sentences: Sequence[str], task: str | None = None, batch_size: int = 64) -> torch.Tensor:
        """(N, H) sentence embeddings of the shared encoder with `task`'s pooling (and PALs); default: the first
        task's."""
        task = self.tasks[0] if task is None else task
        batch_size = self._check(task, batch_size)
        r = self.run
        texts = [_example(i, s, False, "embed").texts[0] for i, s in enumerate(as_inputs(sentences, False, "embed"))]
        if not texts:
            return torch.empty(0, r.model.bert.config.hidden_size)
        ids = r.tok.encode(texts, r.cfg.task(task).max_length)
        return r.runner.sentences(task, ids, min(batch_size, len(texts))).float().cpu()

    def _check(self, task: str, batch_size) -> int:
        """The batch size as an int (any integer type: numpy's too; not a bool, not a float). One beyond the number
        of inputs is one batch of them all: the callers cap it there, so 2**62 means "all at once", not an overflow."""
        if not isinstance(task, str) or task not in self.run.cfg.tasks:
            raise MinbertError(f"task {task!r}: this run was trained on {', '.join(self.tasks)}")
        return whole_number("batch_size", batch_size)


def whole_number(name: str, value, least: int = 1) -> int:
    """An integer argument through `operator.index` (int, numpy ints, anything integer-like), bools refused."""
    try:
        if isinstance(value, (bool, np.bool_)):  # an integer to index(), but never meant as a count
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise MinbertError(
            f"{name} {value!r:.60}: expected a whole number >= {least} (an int; numpy integers are fine), "
            f"got {type(value).__name__}"
        ) from None
    if n < least:
        raise MinbertError(f"{name} {n}: must be a whole number >= {least}")
    return n


def as_inputs(inputs, pair: bool, task: str) -> list:
    """The caller's inputs as a list of examples: a single sentence (a string) or, for a pair task, a single pair
    (a tuple of two strings) is one example, not a sequence of characters or of two sentences."""
    if inputs is None:
        raise MinbertError(f"{task}: inputs is None; give a list of sentences{' pairs' if pair else ''}")
    if isinstance(inputs, str):
        if pair:
            raise MinbertError(f"{task}: a pair task needs (sentence_a, sentence_b) pairs, got one string")
        return [inputs]
    if pair and isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs):
        return [inputs]
    if isinstance(inputs, (bytes, bytearray, dict)) or not hasattr(inputs, "__iter__"):
        raise MinbertError(f"{task}: expected a list of inputs, got {type(inputs).__name__}")
    return list(inputs)


def _example(i: int, x, pair: bool, task: str) -> Example:
    ok = isinstance(x, str) if not pair else isinstance(x, (tuple, list)) and len(x) == 2
    texts = (x,) if isinstance(x, str) else tuple(x) if ok else ()
    if not ok or not all(isinstance(t, str) for t in texts):
        want = "a pair of sentences (a, b)" if pair else "one sentence (a string)"
        raise MinbertError(f"{task} input {i + 1}: expected {want}, got {x!r:.80}")
    for side, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:  # refused, not replaced: a prediction must be of the text the caller has
            which = f" (sentence {'ab'[side]})" if pair else ""
            raise MinbertError(
                f"{task} input {i + 1}{which}: character {e.start + 1} is {ascii(t[e.start])}, a lone surrogate, "
                "not text; decode the source bytes with errors='replace', or remove the character"
            ) from None
    return Example(str(i), texts, None)


def load(run_dir: str | Path, device: str | None = None, precision: str | None = None) -> Model:
    """The best checkpoint of a `minbert train` run directory, on `device` ("cpu", "cuda", "cuda:N", "auto"; default
    the run's), run in `precision` ("fp32", "bf16", "fp16", "int8" - dynamic int8 quantization on CPU -, "auto";
    default the run's). Each argument is checked before anything loads: a wrong one is a MinbertError naming it."""
    run = as_path("run_dir", run_dir)
    device = check_device(device)
    if precision is not None and (not isinstance(precision, str) or precision not in INFERENCE_PRECISIONS):
        raise MinbertError(
            f"precision {precision!r:.60}: valid: {', '.join(INFERENCE_PRECISIONS)}, or None for the run's own"
        )
    cfg = load_run_config(run)
    if precision == "int8" and pick_device(device or cfg.device).type != "cpu":
        raise MinbertError(
            f"precision int8 with device {device or cfg.device!r}: dynamic int8 quantization runs on CPU; give "
            "device='cpu', or precision='bf16' on a GPU"
        )
    return Model(load_run(run, device=device, cfg=cfg, precision=precision))


def as_path(name: str, value) -> Path:
    """A path argument: a str or os.PathLike the file system can take (no NUL byte, no lone surrogate)."""
    if not isinstance(value, (str, os.PathLike)):
        raise MinbertError(f"{name} {value!r:.60}: expected a path (a str or pathlib.Path), got {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text or "\x00" in text:
        raise MinbertError(f"{name} {text!r:.60}: not a path; give the run's folder, e.g. runs/quickstart")
    try:
        os.fsencode(text)
    except UnicodeEncodeError as e:
        raise MinbertError(
            f"{name} {ascii(text):.60}: character {e.start + 1} cannot be a file name here (a lone surrogate)"
        ) from None
    return Path(text)


DEVICES = ("auto", "cpu", "cuda")


def check_device(device) -> str | None:
    """None (the run's device), "auto", "cpu", "cuda" or "cuda:N" of a GPU that is there; a torch.device is fine."""
    if device is None:
        return None
    if isinstance(device, torch.device):
        device = str(device)
    valid = f"valid: {', '.join(DEVICES)}, cuda:N, or None for the run's own"
    if not isinstance(device, str):
        raise MinbertError(f"device {device!r:.60}: expected a string; {valid}")
    kind, colon, index = device.partition(":")
    if kind == "cpu" and index == "0":  # torch's name for the one CPU device
        return "cpu"
    if kind not in DEVICES or colon and (kind != "cuda" or not (index.isascii() and index.isdigit())):
        raise MinbertError(f"device {device!r:.60}: {valid}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise MinbertError(f"device {device!r}: no CUDA device is available here; use device='cpu' (or 'auto')")
    if index and int(index) >= torch.cuda.device_count():
        raise MinbertError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def read_inputs(path: str, pair: bool, task: str) -> list:
    """Inputs for `minbert predict --input`: one sentence per line (a pair task: two tab-separated sentences), or
    JSON lines with "text" (pairs: "text_a" and "text_b", or "sentence1" and "sentence2"); "-" reads stdin. Blank
    lines are skipped."""
    import json
    import sys

    if path == "-":
        raw, where = sys.stdin.buffer.read(), "stdin"
        try:
            lines = raw.decode("utf-8-sig").splitlines()
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise MinbertError(
                f"stdin:{line}: byte 0x{raw[e.start]:02x} is not UTF-8; pipe UTF-8 text (e.g. through "
                "`iconv -f latin1 -t utf-8`)"
            ) from None
    else:
        lines, where = read_text(path, "input file").splitlines(), path
    table = _cs224n_columns(lines, pair, task, where)
    if table is not None:
        return table
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise MinbertError(f"{where}:{n}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
            keys = [("text_a", "text_b"), ("sentence1", "sentence2")] if pair else [("text",), ("sentence",)]
            found = next((k for k in keys if isinstance(obj, dict) and all(x in obj for x in k)), None)
            if found is None:
                want = " or ".join("+".join(k) for k in keys)
                raise MinbertError(f"{where}:{n}: a JSON line for {task} needs the key(s) {want}")
            if not all(isinstance(obj[x], (str, int, float)) and not isinstance(obj[x], bool) for x in found):
                raise MinbertError(f"{where}:{n}: {', '.join(found)} must be text, not null, a list or an object")
            out.append(tuple(str(obj[x]) for x in found) if pair else str(obj[found[0]]))
        elif pair:
            parts = line.split("\t")
            if len(parts) != 2:
                raise MinbertError(f"{where}:{n}: {task} reads pairs: two sentences separated by one tab")
            out.append((parts[0], parts[1]))
        else:
            out.append(line)
    return out


def _cs224n_columns(lines: list[str], pair: bool, task: str, where: str) -> list | None:
    """A CS224N data file (tab-separated, a header naming `sentence`, or `sentence1` and `sentence2`): the named
    columns of each row, in order; None when the first line is no such header (plain sentences or JSON lines)."""
    import csv

    first = next((line for line in lines if line.strip()), "")
    names = [c.strip() for c in first.split("\t")]
    want = ["sentence1", "sentence2"] if pair else ["sentence"]
    if "\t" not in first or not ({"sentence", "sentence1"} & set(names)):
        return None
    if not all(w in names for w in want):
        kind = "a pair file (sentence1, sentence2)" if "sentence1" in names else "a single-sentence file (sentence)"
        raise MinbertError(f"{where}:1: {kind}, but {task} reads {' and '.join(want)}; choose the run's other task")
    cols = [names.index(w) for w in want]
    out = []
    start = lines.index(first) + 1
    for n, row in enumerate(csv.reader(lines[start:], delimiter="\t"), start + 1):
        if not row or not any(x.strip() for x in row):
            continue
        if len(row) <= max(cols):
            raise MinbertError(f"{where}:{n}: {len(row)} column(s), the header names {len(names)}; repair the row")
        texts = tuple(row[c].strip() for c in cols)
        out.append(texts if pair else texts[0])
    return out


def write_outputs(inputs: list, preds: list[dict], fmt: str, stream) -> None:
    """One line per prediction: JSON lines ({"input": .., "label": .., ...}) or CSV with a header."""
    import csv
    import json

    if fmt == "jsonl":
        for x, p in zip(inputs, preds):
            stream.write(json.dumps({"input": x if isinstance(x, str) else list(x), **p}) + "\n")
        return
    pair = bool(inputs) and not isinstance(inputs[0], str)
    keys = list(preds[0]) if preds else []
    w = csv.writer(stream)
    w.writerow((["sentence1", "sentence2"] if pair else ["sentence"]) + keys)
    for x, p in zip(inputs, preds):
        values = [" ".join(f"{v:.6f}" for v in p[k]) if isinstance(p[k], list) else p[k] for k in keys]
        w.writerow(([*x] if pair else [x]) + values)
