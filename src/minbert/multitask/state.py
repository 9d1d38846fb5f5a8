"""Resumable training state: weights and optimizer moments as safetensors, everything else as JSON.

A save writes a fresh folder `checkpoints/<kind>-<step>/` and only then replaces the pointer `<kind>.json` (an
atomic rename). A kill at any moment leaves the pointer naming complete earlier folders. The pointer lists the newest
KEEP folders of its kind, each with its files' sizes and SHA-256 sums; older folders are removed after the switch.
A load checks the newest folder against the pointer and falls back to the one before, with a warning, when it is
damaged (truncated, edited, deleted); a pointer that is missing or unreadable is rebuilt from the folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from minbert.errors import MinbertError
from minbert.files import read_json
from minbert.model.lora import peft_adapter
from minbert.runs import atomic_write_text, load_tensors, save_tensors

log = logging.getLogger(__name__)

KEEP = 2  # folders kept per kind: the newest, and one to fall back to
FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


def save_snapshot(
    run: Path,
    kind: str,
    step: int,
    model: nn.Module,
    optimizer=None,
    state: dict | None = None,
    extra: dict | None = None,
    keep: int = KEEP,
) -> Path:
    """`extra`: more tensors to keep with the optimizer state (e.g. a regularizer's EMA weights); `keep`: how many
    folders of this kind stay (the newest first)."""
    folder = run / "checkpoints" / f"{kind}-{step:08d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_tensors(folder / "model.safetensors", model.state_dict())
    state = dict(state or {})
    if optimizer is not None:
        tensors, state["optimizer"] = optimizer_state(model, optimizer)
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from its own stream
            tensors["rng/cuda"] = torch.cuda.get_rng_state()
        tensors.update({f"extra/{k}": v for k, v in (extra or {}).items()})
        save_tensors(folder / "optimizer.safetensors", tensors)
    atomic_write_text(folder / "state.json", json.dumps(state, indent=1))
    try:
        earlier = [e for e in _entries(run, kind) if e["folder"] != folder.name]
    except MinbertError:  # no pointer yet, or a broken one: this save starts a fresh list
        earlier = []
    kept = [_describe(folder, step)] + [e for e in earlier if (run / "checkpoints" / e["folder"]).is_dir()][: keep - 1]
    _write_pointer(run, kind, kept)  # the commit
    names = {e["folder"] for e in kept}
    for old in (run / "checkpoints").glob(f"{kind}-*"):
        if old.name not in names:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _describe(folder: Path, step: int) -> dict:
    files = {}
    for name in FILES:
        if (folder / name).is_file():
            files[name] = {"size": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
    return {"folder": folder.name, "step": step, "files": files}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_pointer(run: Path, kind: str, entries: list[dict]) -> None:
    newest = entries[0]
    atomic_write_text(
        run / f"{kind}.json",
        json.dumps({"folder": newest["folder"], "step": newest["step"], "checkpoints": entries}, indent=1),
    )


def _entries(run: Path, kind: str) -> list[dict]:
    """The pointer's checkpoints, newest first; MinbertError when the pointer is missing or unreadable."""
    pointer = run / f"{kind}.json"
    if not pointer.is_file():
        raise MinbertError(f"{pointer}: missing")
    data = read_json(pointer, "checkpoint pointer")
    try:
        entries = data.get("checkpoints") or [{"folder": data["folder"], "step": data["step"]}]
        if not all(
            isinstance(e, dict) and isinstance(e["folder"], str) and isinstance(e["step"], int) for e in entries
        ):
            raise TypeError("an entry is not {folder: name, step: number}")
        return entries
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MinbertError(f"{pointer}: unreadable ({type(e).__name__}: {e})") from None


def candidates(run: Path, kind: str) -> list[dict]:
    """Checkpoints to try, newest first: the pointer's, then any other complete-looking folder of this kind. A
    missing or broken pointer is rebuilt from the folders (step numbers are in their names)."""
    folders = sorted((run / "checkpoints").glob(f"{kind}-*"), reverse=True)  # zero-padded steps: newest first
    found = [
        {"folder": f.name, "step": int(f.name.rsplit("-", 1)[1])} for f in folders if f.name.rsplit("-", 1)[1].isdigit()
    ]
    try:
        listed = _entries(run, kind)
    except MinbertError as e:
        if not found:
            if not (run / f"{kind}.json").exists():
                raise MinbertError(_no_checkpoint(run, kind)) from None
            raise MinbertError(f"{e}, and no checkpoints/{kind}-* folder to rebuild it from") from None
        log.warning("%s; rebuilding it from %d checkpoint folder(s)", e, len(found))
        try:
            _write_pointer(run, kind, found)
        except OSError:  # a read-only run directory: use the rebuilt list without writing it
            pass
        return found
    names = {e["folder"] for e in listed}
    return listed + [e for e in found if e["folder"] not in names]


def _no_checkpoint(run: Path, kind: str) -> str:
    if not (run / "config.yaml").is_file():
        return f"{run}: no {kind} checkpoint and no config.yaml; is this a minbert train run directory?"
    if (run / "summary.json").is_file():
        return (
            f"{run}: no {kind} checkpoint, but summary.json says the run finished: its checkpoints/ folder was moved "
            f"or deleted; restore it, or train again with `minbert train {run}/config.yaml out={run} --overwrite`"
        )
    when = "its first checkpoint" if kind == "last" else "its first evaluation (where the best checkpoint is written)"
    return (
        f"{run}: this run stopped before {when}, so there is nothing to {'resume' if kind == 'last' else 'load'}; "
        f"train it again from the start with `minbert train {run}/config.yaml out={run} --overwrite`"
    )


def verify(folder: Path, entry: dict, names=FILES) -> None:
    """The folder's files against the sizes and sums its pointer recorded (when it recorded them)."""
    if not folder.is_dir():
        raise MinbertError(f"{folder}: folder missing")
    for name in names:
        path, want = folder / name, entry.get("files", {}).get(name)
        if not path.is_file():
            raise MinbertError(f"{path}: missing")
        if want is None:
            continue
        if path.stat().st_size != want["size"]:
            raise MinbertError(
                f"{path}: {path.stat().st_size} bytes, the pointer recorded {want['size']} (truncated or replaced)"
            )
        if _sha256(path) != want["sha256"]:
            raise MinbertError(f"{path}: checksum differs from the pointer's (the file was damaged or changed)")


def snapshot_folder(run: Path, kind: str) -> Path:
    """The newest folder of this kind that passes its checks."""
    for entry in candidates(run, kind):
        folder = run / "checkpoints" / entry["folder"]
        try:
            verify(folder, entry, ("model.safetensors", "state.json"))
            return folder
        except MinbertError:
            continue
    raise MinbertError(f"{run}: every {kind} checkpoint is damaged or missing")


def load_snapshot(
    run: Path, kind: str, model: nn.Module, optimizer=None, extra: dict | None = None, new: tuple[str, ...] = ()
) -> dict:
    """Restore weights (and optimizer, torch RNG and the `extra` tensors, into the given dict, when an optimizer
    is given) from the newest intact checkpoint of this kind; returns the saved JSON state. `new`: name prefixes of
    the model's parameters the checkpoint may lack (a task added to the run); nothing else may be missing or extra."""
    needed = FILES if optimizer is not None else ("model.safetensors", "state.json")
    damaged = []
    for entry in candidates(run, kind):
        folder = run / "checkpoints" / entry["folder"]
        try:
            verify(folder, entry, needed)
            weights = load_tensors(folder / "model.safetensors")
            state = read_json(folder / "state.json", "checkpoint state")
            tensors = load_tensors(folder / "optimizer.safetensors") if optimizer is not None else {}
        except (MinbertError, ValueError, OSError) as e:
            damaged.append(str(e))
            log.warning("%s checkpoint at step %s is damaged (%s); trying the one before", kind, entry["step"], e)
            continue
        try:
            found = model.load_state_dict(weights, strict=not new)
            wrong = found.unexpected_keys + [k for k in found.missing_keys if not k.startswith(new)]
            if wrong:
                raise RuntimeError(f"unexpected or missing key(s) in state_dict: {', '.join(wrong[:4])}")
        except RuntimeError as e:  # intact, but not this model: the run's config.yaml was changed
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MinbertError(
                f"{folder / 'model.safetensors'}: does not fit the model config.yaml describes ({first}); "
                f"was config.yaml edited after the run?"
            ) from None
        if optimizer is not None:
            restore_optimizer(model, optimizer, tensors, state["optimizer"])
            torch.set_rng_state(tensors["rng/torch"])
            if "rng/cuda" in tensors and torch.cuda.is_available():
                torch.cuda.set_rng_state(tensors["rng/cuda"])
            if extra is not None:
                extra.update({k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")})
        if damaged:
            log.warning("%s: continuing from the %s checkpoint at step %s", run, kind, entry["step"])
        return state
    raise MinbertError(f"{run}: no intact {kind} checkpoint: {damaged[0] if damaged else 'none listed'}")


def optimizer_state(model: nn.Module, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Moments keyed by parameter name (stable across runs), scalars and hyper-parameters as JSON."""
    names = {p: n for n, p in model.named_parameters()}
    tensors, steps = {}, {}
    for p, s in optimizer.state.items():
        n = names[p]
        for k, v in s.items():
            if torch.is_tensor(v) and v.dim() > 0:
                tensors[f"{k}/{n}"] = v
            else:
                steps[f"{k}/{n}"] = v.item() if torch.is_tensor(v) else v
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return tensors, {"scalars": steps, "groups": groups}


def restore_optimizer(model: nn.Module, optimizer, tensors: dict, meta: dict) -> None:
    params = dict(model.named_parameters())
    for key, v in tensors.items():
        if key.startswith(("rng/", "extra/")):
            continue
        k, n = key.split("/", 1)
        optimizer.state[params[n]][k] = v.to(params[n].device, copy=True)  # the file's tensors are on the CPU
    for key, v in meta["scalars"].items():
        k, n = key.split("/", 1)
        optimizer.state[params[n]][k] = v
    for g, saved in zip(optimizer.param_groups, meta["groups"]):
        g.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def write_adapter(model, task: str, folder: Path, base: str) -> Path:
    """What one task owns in a run whose shared weights stay the checkpoint's: its LoRA adapters as a PEFT adapter
    folder (adapter_model.safetensors, adapter_config.json; `base` names the shared encoder's folder) and its head
    (head.safetensors, the head's own parameter names)."""
    tensors, config = peft_adapter(model.lora[task], base)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / "adapter_model.safetensors", tensors, {"format": "pt"})
    atomic_write_text(folder / "adapter_config.json", json.dumps(config, indent=2))
    head = {k: v.detach().float() for k, v in model.heads[task].state_dict().items()}
    save_tensors(folder / "head.safetensors", head)
    return folder
