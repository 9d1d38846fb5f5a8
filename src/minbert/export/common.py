"""What the export formats share: the encoder folder (Hugging Face names and config), the tokenizer files, JSON
files written atomically, and which task's embeddings an export gives by default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from minbert.model import resolve_checkpoint
from minbert.model.heads import HEADS
from minbert.multitask.run import LoadedRun
from minbert.runs import atomic_write_text, save_tensors

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
QUORA_NOTE = (
    "The embedded starting checkpoint (all-MiniLM-L6-v2) was trained on sentence pairs that include Quora "
    "duplicates: its Quora numbers are optimistic."
)


def write_encoder(
    run: LoadedRun, out: Path, config: dict, prefix: str = "", more: dict | None = None, task: str | None = None
) -> Path:
    """The shared encoder's weights (Hugging Face names; with `task`, its LoRA adapters merged in), config.json and
    the tokenizer files."""
    out.mkdir(parents=True, exist_ok=True)
    state = {prefix + k: v.detach().float().contiguous() for k, v in run.model.encoder_state(task).items()}
    save_tensors(out / "model.safetensors", {**state, **(more or {})}, {"format": "pt"})
    write_json(out / "config.json", {**json.loads(run.model.bert.config.to_json()), **config})
    copy_tokenizer(run, out)
    return out


def copy_tokenizer(run: LoadedRun, out: Path) -> None:
    source = resolve_checkpoint(run.cfg.checkpoint)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def default_embedding_task(run: LoadedRun) -> str:
    """The task whose embeddings were trained for similarity (a cosine head), else a bi-encoder, else the first."""
    tasks = list(run.cfg.tasks)
    for want in ("similarity", "bi_encoder"):
        found = [t for t in tasks if getattr(HEADS[run.cfg.task(t).head], want)]
        if found:
            return found[0]
    return tasks[0]


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
