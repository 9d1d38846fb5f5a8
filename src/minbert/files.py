"""One reader for every file a user hands us: configs, checkpoint and tokenizer JSON, run files, data and input text.

Each function reads one kind of file and checks what it holds before anything uses it: a missing file, a folder
where a file goes, bytes that are not UTF-8, a YAML or JSON syntax error, a duplicated key, or a top-level value of
the wrong kind is one MinbertError naming the path (and line:column where there is one) and what to do. Nothing
here returns a half-read file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from minbert.errors import MinbertError

log = logging.getLogger(__name__)


def read_bytes(path: str | Path, what: str = "file", hint: str = "") -> bytes:
    path = Path(path)
    if path.is_dir():
        raise MinbertError(f"{path}: is a folder, not a {what}{'; ' + hint if hint else ''}")
    if not path.exists():
        parent = nearest_existing(path.parent)
        if parent.exists() and not parent.is_dir():
            raise MinbertError(f"{path}: {parent} is a file, not a folder; check the path")
        raise MinbertError(f"{path}: no such {what}{'; ' + hint if hint else ''}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise MinbertError(f"{path}: cannot read the {what} ({e.strerror}); check its permissions") from None


def read_text(path: str | Path, what: str = "file", hint: str = "") -> str:
    """The file as text; a byte-order mark is dropped (not read into the first column's name)."""
    raw = read_bytes(path, what, hint)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise MinbertError(f"{path}:{line}: byte 0x{raw[e.start]:02x} is not UTF-8; save the {what} as UTF-8") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def parse_json(text: str, where: str, what: str = "JSON") -> Any:
    """JSON text -> value; a syntax error or a repeated key is one MinbertError `where:line:col: ...`."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise MinbertError(f"{where}:{e.lineno}:{e.colno}: not valid {what} ({e.msg})") from None
    except ValueError as e:  # a repeated key
        raise MinbertError(f"{where}: not valid {what} ({e}); keep one") from None
    except RecursionError:
        raise MinbertError(f"{where}: not valid {what} (nested too deeply)") from None


def read_json(path: str | Path, what: str = "JSON file", kind: type = dict, fix: str = "") -> Any:
    """A JSON file whose top level is a `kind` (dict or list)."""
    value = parse_json(read_text(path, what), str(path), what)
    if not isinstance(value, kind):
        got = type(value).__name__
        raise MinbertError(
            f"{path}: a {what} must hold a JSON {'object' if kind is dict else kind.__name__}, got {got}"
            + (f"; {fix}" if fix else "")
        )
    return value


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one in silence)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key (a list or a mapping as a key)
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
            ) from None
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {first + 1}); keep one", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping_plain(node, deep=deep)


_StrictLoader.construct_mapping_plain = yaml.SafeLoader.construct_mapping
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> value; a syntax error is one line `where:line:col: problem`, a repeated key refused."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = " ".join(str(e.problem or e.context or "syntax error").split())
        raise MinbertError(f"{at}: not valid YAML ({problem})") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise MinbertError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from None


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping (an empty file is {})."""
    data = parse_yaml(read_text(path, what), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MinbertError(f"{path}: a {what} must be a mapping of keys, got a {type(data).__name__}")
    return data


def read_jsonl(path: str | Path, what: str = "JSON-lines file", torn_last: bool = False) -> list[dict]:
    """One JSON object per line. `torn_last`: a last line cut off mid-write (a kill, a full disk) is dropped with a
    warning instead of refused - what a log written line by line may end with."""
    return [record for _, record in _numbered_jsonl(path, what, torn_last)]


def _numbered_jsonl(path: str | Path, what: str, torn_last: bool) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line: read_jsonl's records with where each came from."""
    lines = read_text(path, what).splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as e:
            if torn_last and n == len(lines):
                log.warning("%s:%d: the last line was cut off mid-write; dropped", path, n)
                break
            raise MinbertError(f"{path}:{n}: not valid JSON ({getattr(e, 'msg', e)})") from None
        if not isinstance(record, dict):
            raise MinbertError(f"{path}:{n}: each line of a {what} must be a JSON object")
        out.append((n, record))
    return out


def read_metrics(path: str | Path) -> list[dict]:
    """A run's metrics.jsonl as plots read it: each line an object with a "step" (and, in an epoch's record of dev/
    or conflict/ values, an "epoch") that is a whole number >= 0, and numbers or null as its other values; anything
    else is one MinbertError naming `path:line`. A last line cut off by a kill is dropped with a warning; a missing
    file is []."""
    path = Path(path)
    if not path.is_file():
        return []
    records = _numbered_jsonl(path, "metrics log", torn_last=True)
    for n, r in records:
        per_epoch = any(k.startswith(("dev/", "conflict/")) for k in r)
        for key, needed in (("step", "each record"), ("epoch", "an epoch's record (dev/ or conflict/ values)")):
            v = r.get(key)
            if key in r or key == "step" or per_epoch:
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    got = f"{key!r} is {json.dumps(v)[:40]}" if key in r else f"no {key!r}"
                    raise MinbertError(f"{path}:{n}: {got}; {needed} needs {key!r}, a whole number >= 0{_EDITED}")
        for key, v in r.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise MinbertError(f"{path}:{n}: {key!r} is {json.dumps(v)[:40]}; values are numbers or null{_EDITED}")
    return [r for _, r in records]


_EDITED = " (`minbert train` writes it so: was the file edited or replaced?)"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: a kill or a full disk leaves the old file or the new,
    never half (and no temporary file behind)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output(target: Path, overwrite: bool, what: str = "output folder") -> None:
    """Before any work: `target` is a new or empty folder, or --overwrite allows replacing it whole (staged); its
    nearest existing parent is a folder we may write to."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise MinbertError(f"{target}: is a file, not a folder; choose a folder for the {what}")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise MinbertError(
            f"{target}: not empty; choose a new folder for the {what}, or add --overwrite to replace it (and "
            "everything in it)"
        )
    if target.is_dir():
        refuse_replacing(target)
    check_writable(target, "another path")


_RUN_MARKS = ("metrics.jsonl", "summary.json", "last.json", "checkpoints")  # beside config.yaml: a training run


def check_new_files(paths: list[Path], overwrite: bool, instead: str) -> None:
    """Before any work: none of `paths` (the files a command writes) exists, unless --overwrite replaces them; each
    can be written. A refusal names the first file and says to choose `instead` or add --overwrite."""
    for path in map(Path, paths):
        if path.is_dir():
            raise MinbertError(f"{path}: is a folder; choose {instead}")
        if path.exists() and not overwrite:
            raise MinbertError(f"{path}: exists; choose {instead}, or add --overwrite to replace it")
        check_writable(path.parent, instead)


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(target: Path, instead: str) -> None:
    """`target` (which may not exist yet) can be made and written: its nearest existing ancestor is a folder we
    may write to; else one MinbertError saying to choose `instead`."""
    parent = nearest_existing(Path(target))
    if not parent.is_dir():
        raise MinbertError(f"{target}: {parent} is a file, not a folder; choose {instead}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MinbertError(f"{target}: {parent} is not writable; choose {instead} or fix its permissions")


OUTPUT_MARK = ".minbert-output"  # in every folder `staged` wrote: what --overwrite may replace whole


@contextlib.contextmanager
def staged(target: Path, mine: bool = False):
    """Yield a temporary sibling folder `.NAME.partial-PID` for a command's outputs; at the end it replaces `target`
    whole (check_output has refused a non-empty one without --overwrite), so nothing of an earlier output is left
    beside the new one. Only a folder that an earlier staged output wrote (its OUTPUT_MARK file), or an empty one,
    is replaced - never a folder of the user's own files; `mine`: the target is the command's own (a run's
    predictions folder). If the command fails - bad input, a full disk, Ctrl-C - the sibling is removed, with any
    folder made for it, and `target` is as it was. Staged folders of processes that are gone (a SIGKILL runs no
    cleanup) are removed first."""
    target = Path(target)
    if target.is_symlink():  # replace the folder it points to, not the link
        target = target.resolve()
    top = nearest_existing(target.parent)
    created = None if top == target.parent else top / target.parent.relative_to(top).parts[0]  # the first made
    existed = target.exists()
    if existed:
        refuse_replacing(target, mine)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent)
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        (tmp / OUTPUT_MARK).write_text("written by minbert; `--overwrite` may replace this folder whole\n")
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not existed:
            shutil.rmtree(target, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def refuse_replacing(target: Path, mine: bool = False) -> None:
    """What staged never replaces whole: the folder we are in (or one around it), a training run, or (unless
    `mine`, or a run's predictions folder) a non-empty folder no staged output wrote - the user's own files."""
    here, where = Path.cwd().resolve(), target.resolve()
    if where == here or where in here.parents:
        raise MinbertError(f"{target}: holds the current folder, which --overwrite would replace; choose a new folder")
    if (target / "config.yaml").is_file() and any((target / f).exists() for f in _RUN_MARKS):
        raise MinbertError(f"{target}: holds a training run, which --overwrite would replace; choose a new folder")
    entries = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    in_run = target.name == "predictions" and (target.parent / "config.yaml").is_file()  # a run's own
    if entries and not (mine or in_run) and OUTPUT_MARK not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise MinbertError(
            f"{target}: holds files minbert did not write ({shown}), which --overwrite would delete; choose a new "
            "folder, or move them out first"
        )


_STAGING = re.compile(r"\..+\.(partial|old)-([0-9]+)")


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove the `.NAME.partial-PID` and `.NAME.old-PID` folders in `folder` whose process is gone (killed
    mid-write: a SIGKILL, a lost machine); those of live processes stay. The paths removed."""
    removed = []
    for entry in Path(folder).iterdir():
        m = _STAGING.fullmatch(entry.name)
        if m is None or not entry.is_dir() or entry.is_symlink() or _alive(int(m.group(2))):
            continue  # staged outputs are folders: a file of that name is someone else's
        shutil.rmtree(entry, ignore_errors=True)
        log.info("%s: removed the staged output of process %s, which is gone", entry, m.group(2))
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (ours counts; a zombie not yet reaped does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # no such pid can exist
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc to tell: assume it lives
    return state != "Z"


def read_summary(run: Path) -> dict:
    """A run's summary.json: an object whose "dev" maps metric names to numbers."""
    path = Path(run) / "summary.json"
    fix = f"it is written at a run's end: `minbert evaluate {run}` recomputes the metrics"
    data = read_json(path, "run summary", dict, fix)
    dev = data.get("dev")
    if not isinstance(dev, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in dev.values()
    ):
        raise MinbertError(f"{path}: 'dev' must map metric names to numbers; {fix}")
    return data
