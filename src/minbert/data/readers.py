"""Readers for the CS224N data files and writers for their prediction files.

The files are tab-separated with a header; the first column is an unnamed row index, then `id`, the sentence
column(s) and, in labeled files, the label. A few published rows have unbalanced quotes that swallow a tab, so a
field comes out empty: such rows are skipped with a warning naming file, line and reason (or, with strict=True,
raise). A missing file, a wrong header or a label outside its range is always an error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from minbert.errors import MinbertError
from minbert.files import read_text

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]


def choose_data_dir(flag: str | None, configured: str) -> str:
    """The one rule for which data folder a command reads: `--data-dir` (or `data_dir=` on the command line), else
    $MINBERT_DATA, else the config file's or the run's saved `data_dir`, else ../shared/data (""). A configured
    folder that $MINBERT_DATA replaces is named in a warning (never dropped without a word)."""
    env = os.environ.get("MINBERT_DATA")
    if not flag and env and configured and Path(configured).expanduser() != Path(env).expanduser():
        log.warning("data_dir %s (config) is replaced by $MINBERT_DATA=%s; --data-dir chooses", configured, env)
    return str(flag or env or configured or "")


def data_dir(override: str | Path | None = None) -> Path:
    """`override`, else $MINBERT_DATA, else ../shared/data beside the repository."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("MINBERT_DATA"):
        return Path(os.environ["MINBERT_DATA"]).expanduser()
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


@dataclass(frozen=True)
class Example:
    id: str
    texts: tuple[str, ...]  # one sentence, or a pair
    label: float | int | None  # None in unlabeled (test-student) files


@dataclass(frozen=True)
class LabelSpec:
    column: str
    parse: Callable[[str], float | int]
    low: float
    high: float

    def check(self, value: float | int) -> bool:
        return self.low <= value <= self.high


def float_label(s: str) -> float:
    """A real-valued label; inf and nan are refused (float() takes them, the metrics would not)."""
    x = float(s)
    if not math.isfinite(x):
        raise ValueError(f"{s!r} is not a finite number")
    return x


def int_label(num_labels: int) -> Callable[[str], int]:
    def parse(s: str) -> int:
        x = float_label(s)  # Quora writes 0.0/1.0
        if x != int(x):
            raise ValueError(f"{s!r} is not a whole number")
        return int(x)

    return parse


def named_label(names: tuple[str, ...]) -> Callable[[str], int]:
    """Class names as written in a file -> their index in `names`."""
    index = {n: i for i, n in enumerate(names)}

    def parse(s: str) -> int:
        if s in index:
            return index[s]
        raise ValueError(f"{s!r} is not one of the labels {', '.join(names)}")

    return parse


FORMATS = ("csv", "tsv", "jsonl")  # custom tasks' file formats


def read_table(
    path: Path, fmt: str, text_columns: tuple[str, ...], label: LabelSpec | None, id_column: str, strict: bool = False
) -> list[Example]:
    """Read a custom task's CSV, TSV (a header row) or JSON-lines file; `fmt` "auto" goes by the extension. A
    labeled row without text is skipped with a warning naming file and line (with strict=True it stops); an
    unlabeled (test) row is kept and predicted on the text there is; a bad label always stops. Ids come from
    `id_column`, or are the row's number among the file's rows (from 0)."""
    path = Path(path)
    if not path.is_file():
        raise MinbertError(f"{path}: no such file (custom_tasks files are looked up in the data folder: --data-dir)")
    wanted = [*text_columns, *([label.column] if label else []), *([id_column] if id_column else [])]
    examples = []
    for i, (n, row) in enumerate(_table_rows(path, fmt, wanted)):
        texts = tuple((row.get(c) or "").strip() for c in text_columns)
        if not all(texts):
            empty = next(c for c, t in zip(text_columns, texts) if not t)
            if strict:
                raise MinbertError(f"{path}:{n}: empty or missing {empty!r}")
            log.warning("%s:%d: empty or missing %r; %s", path, n, empty, "skipped" if label else "predicted anyway")
            if label:
                continue
        y = None
        if label:
            raw = (row.get(label.column) or "").strip()
            try:
                y = label.parse(raw)
            except ValueError as e:
                raise MinbertError(f"{path}:{n}: label {raw!r} in {label.column!r}: {e}") from None
            if not label.check(y):
                raise MinbertError(f"{path}:{n}: label {y} is outside {label.low:g}..{label.high:g}")
        examples.append(Example((row.get(id_column) or "").strip() if id_column else str(i), texts, y))
    _warn_repeated_ids(path, examples)
    if not examples:
        raise MinbertError(f"{path}: no usable rows")
    return examples


def _table_rows(path: Path, fmt: str, wanted: list[str]) -> list[tuple[int, dict]]:
    """(line number, {column: text}) for each row of a CSV, TSV or JSON-lines file; the header must name `wanted`."""
    if fmt == "auto":
        fmt = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix.lower(), "")
        if not fmt:
            raise MinbertError(f"{path}: unknown extension; set the task's format: to one of {', '.join(FORMATS)}")
    text = _text(path)
    if fmt != "jsonl":
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t")
        rows = [(reader.line_num, row) for row in _csv_rows(reader, path)]
        missing = [c for c in wanted if c not in (reader.fieldnames or [])]
        if missing:
            found = ", ".join(map(repr, reader.fieldnames or [])) or "no header"
            raise MinbertError(f"{path}: no column {missing[0]!r} (found: {found}); set the task's text/label/id")
        return rows
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise MinbertError(f"{path}:{n}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')})") from None
            if not isinstance(row, dict):
                raise MinbertError(f"{path}:{n}: each line must be a JSON object with named fields")
            rows.append((n, {k: "" if v is None else str(v) for k, v in row.items()}))
    return rows


def read_examples(
    path: Path, text_columns: tuple[str, ...], label: LabelSpec | None, strict: bool = False
) -> list[Example]:
    """Read one CS224N file. `label=None` reads an unlabeled file; a labeled spec requires the label column."""
    path = Path(path)
    if not path.is_file():
        raise MinbertError(f"{path}: no such file (set MINBERT_DATA or --data-dir to the folder of CS224N data files)")
    examples: list[Example] = []
    skipped = 0
    with io.StringIO(_text(path), newline="") as fp:
        reader = csv.DictReader(fp, delimiter="\t")
        header = [h for h in (reader.fieldnames or []) if h]
        wanted = ["id", *text_columns] + ([label.column] if label else [])
        if any(c not in header for c in wanted):
            raise MinbertError(
                f"{path}: expected columns {', '.join(wanted)}; found {', '.join(header) or 'no header'}"
            )
        line = 1
        for row in _csv_rows(reader, path):
            start, line = line + 1, reader.line_num
            problem = _problem(row, text_columns, label)
            if (
                problem is not None
                and label is None
                and not strict
                and (row.get("id") or "").strip()
                and None not in row
            ):
                # an unlabeled (test) row is predicted on whatever text it has, so the submission keeps every id
                log.warning("%s:%d: %s; predicted on the text there is", path, start, problem)
                examples.append(
                    Example(row["id"].strip(), tuple((row.get(c) or "").strip() for c in text_columns), None)
                )
                continue
            if problem is None:
                y = label.parse(row[label.column].strip()) if label else None
                if label and not label.check(y):
                    raise MinbertError(
                        f"{path}:{start}: label {y} is outside {label.low:g}..{label.high:g} for column "
                        f"{label.column!r}; is this the right file for the task?"
                    )
                texts = tuple(row[c].strip() for c in text_columns)
                examples.append(Example(row["id"].strip(), texts, y))
                continue
            if strict:
                raise MinbertError(f"{path}:{start}: malformed row: {problem}")
            skipped += 1
            log.warning("%s:%d: skipped malformed row: %s", path, start, problem)
    if skipped:
        log.warning(
            "%s: skipped %d malformed row(s) of %d (use --strict to stop instead)",
            path,
            skipped,
            skipped + len(examples),
        )
    _warn_repeated_ids(path, examples)
    if not examples:
        raise MinbertError(f"{path}: no usable rows")
    return examples


def _text(path: Path) -> str:
    """The file as text; a byte-order mark is dropped (not read into the first column's name)."""
    return read_text(path, "data file")


def _csv_rows(reader, path: Path):
    """The rows of a csv reader; a quote left open swallows the rest of the file into one field, which the csv
    module reports as a field over its size limit (or an end of file inside a quote): one line naming where."""
    start = 1
    try:
        for row in reader:
            yield row
            start = reader.line_num + 1
    except csv.Error as e:
        raise MinbertError(
            f'{path}:{start}: cannot read the row ({e}); a quote (") opened there is probably never closed: '
            "remove it, or close it"
        ) from None


def _warn_repeated_ids(path: Path, examples: list[Example]) -> None:
    seen: dict[str, int] = {}
    for e in examples:
        seen[e.id] = seen.get(e.id, 0) + 1
    repeated = [i for i, n in seen.items() if n > 1]
    if repeated:
        log.warning("%s: %d id(s) appear more than once (e.g. %s); each row is kept and predicted", path,
                    len(repeated), repeated[0])  # fmt: skip


def _problem(row: dict, text_columns: tuple[str, ...], label: LabelSpec | None) -> str | None:
    if None in row:
        return "more fields than the header names"
    if not (row.get("id") or "").strip():
        return "empty id"
    for c in text_columns:
        if row.get(c) is None:
            return f"missing field {c!r} (a quote probably swallowed a tab)"
        if not row[c].strip():
            return f"empty {c!r}"
    if label:
        raw = (row.get(label.column) or "").strip()
        if not raw:
            return f"empty label {label.column!r} (a quote probably swallowed a tab)"
        try:
            label.parse(raw)
        except ValueError:
            return f"label {raw!r} in {label.column!r} is not a number"
    return None


def write_predictions(path: Path, header: str, ids: list[str], predictions: list) -> None:
    """CS224N prediction file: a header line `id \\t <header>` then `id , prediction` lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"id \t {header} \n")
        for i, p in zip(ids, predictions, strict=True):
            f.write(f"{i} , {p} \n")
    os.replace(tmp, path)


def read_predictions(path: Path) -> dict[str, str]:
    """Inverse of write_predictions: id -> prediction text."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    out = {}
    for n, line in enumerate(lines, start=2):
        parts = line.split(",")
        if len(parts) != 2:
            raise MinbertError(f"{path}:{n}: expected `id , prediction`, got {line!r}")
        out[parts[0].strip()] = parts[1].strip()
    return out
