"""A BERT checkpoint's shape, read from its `config.json` (Hugging Face names), and the activations it may name."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable

import torch
import torch.nn.functional as F

from minbert.config import from_dict, ge, gt, within
from minbert.errors import MinbertError
from minbert.files import read_json


@dataclass(frozen=True)
class BertConfig:
    vocab_size: Annotated[int, ge(1)] = 30522
    hidden_size: Annotated[int, ge(1)] = 768
    num_hidden_layers: Annotated[int, ge(1)] = 12
    num_attention_heads: Annotated[int, ge(1)] = 12
    intermediate_size: Annotated[int, ge(1)] = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: Annotated[float, within(0, 1, "[)")] = 0.1
    attention_probs_dropout_prob: Annotated[float, within(0, 1, "[)")] = 0.1
    max_position_embeddings: Annotated[int, ge(1)] = 512
    type_vocab_size: Annotated[int, ge(1)] = 2
    layer_norm_eps: Annotated[float, gt(0)] = 1e-12
    pad_token_id: Annotated[int, ge(0)] = 0
    initializer_range: Annotated[float, ge(0)] = 0.02

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        """A checkpoint's config.json: the keys minbert uses, each checked for type and range (a config.json cut
        off, a list where an object goes, a size of "384" or -1 stop here, not in the middle of building)."""
        path = Path(path)
        raw = read_json(path, "checkpoint config.json", dict, "a checkpoint directory needs config.json and weights")
        if raw.get("model_type", "bert") != "bert":
            raise MinbertError(f"{path}: model_type is {raw['model_type']!r}; minbert loads BERT checkpoints only")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise MinbertError(f"{path}: position_embedding_type {raw['position_embedding_type']!r} is not supported")
        if raw.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise MinbertError(f"{path}: hidden_act {raw['hidden_act']!r} unknown; known: {sorted(ACTIVATIONS)}")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            cfg = from_dict(cls, {k: v for k, v in raw.items() if k in known})
        except MinbertError as e:
            raise MinbertError(f"{path}: {e}") from None
        if cfg.hidden_size % cfg.num_attention_heads:
            raise MinbertError(
                f"{path}: hidden_size {cfg.hidden_size} is not a multiple of num_attention_heads "
                f"{cfg.num_attention_heads}"
            )
        if cfg.pad_token_id >= cfg.vocab_size:
            raise MinbertError(f"{path}: pad_token_id {cfg.pad_token_id} is outside the vocabulary ({cfg.vocab_size})")
        return cfg

    def to_json(self) -> str:
        return json.dumps({"model_type": "bert", **dataclasses.asdict(self)}, indent=2)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact erf form, as Hugging Face's "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}
