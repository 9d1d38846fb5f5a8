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

from pathlib import Path
from typing import Sequence

import torch

from minbert.data import Example
from minbert.errors import MinbertError
from minbert.files import read_text
from minbert.multitask.data import encode_task
from minbert.multitask.run import LoadedRun, load_run
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
        self._check(task, batch_size)
        spec = self.specs[task]
        examples = [_example(i, x, spec.pair, task) for i, x in enumerate(as_inputs(inputs, spec.pair, task))]
        if not examples:
            return torch.empty(0)
        data = encode_task(spec, examples, self.run.tok, self.run.cfg.task(task))
        return self.run.runner.soft(task, data, batch_size)

    @torch.inference_mode()
    def embed(self, sentences: Sequence[str], task: str | None = None, batch_size: int = 64) -> torch.Tensor:
        """(N, H) sentence embeddings of the shared encoder with `task`'s pooling (and PALs); default: the first
        task's."""
        task = self.tasks[0] if task is None else task
        self._check(task, batch_size)
        r = self.run
        texts = [_example(i, s, False, "embed").texts[0] for i, s in enumerate(as_inputs(sentences, False, "embed"))]
        if not texts:
            return torch.empty(0, r.model.bert.config.hidden_size)
        ids = r.tok.encode(texts, r.cfg.task(task).max_length)
        return r.runner.sentences(task, ids, batch_size).float().cpu()

    def _check(self, task: str, batch_size: int) -> None:
        if not isinstance(task, str) or task not in self.run.cfg.tasks:
            raise MinbertError(f"task {task!r}: this run was trained on {', '.join(self.tasks)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MinbertError(f"batch_size {batch_size!r}: must be a whole number >= 1")


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
    return Example(str(i), texts, None)


def load(run_dir: str | Path, device: str | None = None, precision: str | None = None) -> Model:
    """The best checkpoint of a `minbert train` run directory, on `device` ("cpu", "cuda"; default the run's), run
    in `precision` ("fp32", "bf16", "int8" - dynamic int8 quantization on CPU -, "auto"; default the run's)."""
    return Model(load_run(Path(run_dir), device=device, precision=precision))


def read_inputs(path: str, pair: bool, task: str) -> list:
    """Inputs for `minbert predict --input`: one sentence per line (a pair task: two tab-separated sentences), or
    JSON lines with "text" (pairs: "text_a" and "text_b", or "sentence1" and "sentence2"); "-" reads stdin. Blank
    lines are skipped."""
    import json
    import sys

    if path == "-":
        lines, where = sys.stdin.read().splitlines(), "stdin"
    else:
        lines, where = read_text(path, "input file").splitlines(), path
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
