"""A BERT checkpoint's shape, read from its `config.json` (Hugging Face names), and the activations it may name."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from minbert.errors import MinbertError


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise MinbertError(
                f"{path}: no config.json; a checkpoint directory needs config.json and weights"
            ) from None
        except json.JSONDecodeError as e:
            raise MinbertError(f"{path}: not valid JSON ({e})") from None
        if raw.get("model_type", "bert") != "bert":
            raise MinbertError(f"{path}: model_type is {raw['model_type']!r}; minbert loads BERT checkpoints only")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise MinbertError(f"{path}: position_embedding_type {raw['position_embedding_type']!r} is not supported")
        if raw.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise MinbertError(f"{path}: hidden_act {raw['hidden_act']!r} unknown; known: {sorted(ACTIVATIONS)}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_json(self) -> str:
        return json.dumps({"model_type": "bert", **dataclasses.asdict(self)}, indent=2)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact erf form, as Hugging Face's "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
