"""Resumable training state: weights and optimizer moments as safetensors, everything else as JSON.

A save writes a fresh folder `checkpoints/<kind>-<step>/` and only then replaces the pointer `<kind>.json` (an
atomic rename). A kill at any moment leaves the pointer naming a complete earlier folder; folders the pointer no
longer names are removed after the switch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from minbert.errors import MinbertError
from minbert.runs import atomic_write_text, load_tensors, save_tensors


def save_snapshot(run: Path, kind: str, step: int, model: nn.Module, optimizer=None, state: dict | None = None, extra: dict | None = None) -> Path:
    """`extra`: more tensors to keep with the optimizer state (e.g. a regularizer's EMA weights)."""
    folder = run / "checkpoints" / f"{kind}-{step:08d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_tensors(folder / "model.safetensors", model.state_dict())
    state = dict(state or {})
    if optimizer is not None:
        tensors, state["optimizer"] = optimizer_state(model, optimizer)
        tensors["rng/torch"] = torch.get_rng_state()
        tensors.update({f"extra/{k}": v for k, v in (extra or {}).items()})
        save_tensors(folder / "optimizer.safetensors", tensors)
    atomic_write_text(folder / "state.json", json.dumps(state, indent=1))
    atomic_write_text(run / f"{kind}.json", json.dumps({"folder": folder.name, "step": step}))  # the commit
    for old in (run / "checkpoints").glob(f"{kind}-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def snapshot_folder(run: Path, kind: str) -> Path:
    pointer = run / f"{kind}.json"
    if not pointer.is_file():
        raise MinbertError(f"{run}: no {kind} checkpoint ({pointer.name} missing); is this a minbert train run directory?")
    return run / "checkpoints" / json.loads(pointer.read_text())["folder"]


def load_snapshot(run: Path, kind: str, model: nn.Module, optimizer=None, extra: dict | None = None) -> dict:
    """Restore weights (and optimizer, torch RNG and the `extra` tensors, into the given dict, when an optimizer
    is given); returns the saved JSON state."""
    folder = snapshot_folder(run, kind)
    model.load_state_dict(load_tensors(folder / "model.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    if optimizer is not None:
        tensors = load_tensors(folder / "optimizer.safetensors")
        restore_optimizer(model, optimizer, tensors, state["optimizer"])
        torch.set_rng_state(tensors["rng/torch"])
        if extra is not None:
            extra.update({k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")})
    return state


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
        optimizer.state[params[n]][k] = v.clone()
    for key, v in meta["scalars"].items():
        k, n = key.split("/", 1)
        optimizer.state[params[n]][k] = v
    for g, saved in zip(optimizer.param_groups, meta["groups"]):
        g.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
