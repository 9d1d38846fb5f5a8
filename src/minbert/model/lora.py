"""Low-rank adapters (Hu et al. 2021, "LoRA"), one set per task on the shared encoder's linear layers.

A targeted layer computes W x + b + (alpha / r) B A dropout(x), with A (r, in) drawn as PEFT draws it (Kaiming
uniform, a = sqrt(5)) and B (out, r) zero, so a fresh adapter computes exactly what the checkpoint does. The names
follow PEFT's (`lora_A`, `lora_B`, each an `nn.Linear` without bias), which is what lets a run's adapters be written
as PEFT adapter folders (export/hf.py) and checked against PEFT on transformers' BertModel (tests/test_lora.py).

Targets, by the Hugging Face module they adapt inside each encoder layer:
    query, key, value      attention.self.{query,key,value}
    attention_output       attention.output.dense
    intermediate           intermediate.dense      (FFN, H -> 4H)
    output                 output.dense            (FFN, 4H -> H)

The adapters attach as PEFT's do, by replacing each targeted `nn.Linear` of the encoder (`attach`) with a
`LoRALinear` over the same weight and bias (so every parameter keeps its Hugging Face name); the encoder's code never
names LoRA. Tasks meet in one encoder pass (the fused multitask pass, model/multitask.py): every token goes through
its own task's adapter. The model's `Routing` (model/routing.py) says which rows of the pass belong to which task -
all of them for a one-task batch, index sets over the flat tokens of a fused one - and each LoRALinear applies its
tasks' low-rank products group by group, so each task's product is one matmul over its own tokens.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from minbert.model.config import BertConfig
from minbert.model.routing import Routing

# target -> the module's path inside a BertLayer (Hugging Face names), and its (in, out) widths from the config
TARGETS: dict[str, str] = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}


def widths(c: BertConfig, target: str) -> tuple[int, int]:
    h, i = c.hidden_size, c.intermediate_size
    return {"intermediate": (h, i), "output": (i, h)}.get(target, (h, h))


class LowRank(nn.Module):
    """One adapted layer's pair: (..., in) -> (..., out) = scaling * B A dropout(x)."""

    def __init__(self, fan_in: int, fan_out: int, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.lora_A = nn.Linear(fan_in, rank, bias=False)
        self.lora_B = nn.Linear(rank, fan_out, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as PEFT's reset_lora_parameters
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout)
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(self.dropout(x))) * self.scaling


class LoRA(nn.Module):
    """One task's adapters: `layer[i][target]`, a LowRank pair per encoder layer and target."""

    def __init__(self, c: BertConfig, rank: int, alpha: float, dropout: float, targets: tuple[str, ...]):
        super().__init__()
        self.targets, self.rank, self.alpha, self.dropout = tuple(targets), rank, alpha, dropout
        self.layer = nn.ModuleList(
            nn.ModuleDict({t: LowRank(*widths(c, t), rank, alpha, dropout) for t in self.targets})
            for _ in range(c.num_hidden_layers)
        )

    @staticmethod
    def parameter_count(c: BertConfig, rank: int, targets: tuple[str, ...]) -> int:
        return c.num_hidden_layers * sum(rank * sum(widths(c, t)) for t in targets)


class LoRALinear(nn.Linear):
    """An encoder's linear layer with per-task adapters: W x + b, plus for each row the low-rank delta of its task's
    adapter (none for a task without one). Made from an `nn.Linear` by `attach`, over the same Parameters."""

    adapters: dict[str, LowRank]  # task -> its pair for this layer: owned (registered) by the task's LoRA, not here
    routing: Routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        d = self.delta(x)
        return y if d is None else y + d.to(y.dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor | None:
        """The adapters' sum for input x (..., in) under the current routing, or None when no routed task has one."""
        parts = [(self.adapters[t], rows) for t, rows in self.routing.groups if t in self.adapters]
        if not parts:
            return None
        if len(parts) == 1 and parts[0][1] is None:
            return parts[0][0](x)
        out = None
        for adapter, rows in parts:  # (n_task, out) over the task's rows, placed into (N, out)
            d = adapter(x.index_select(0, rows))
            out = x.new_zeros(x.shape[0], d.shape[-1], dtype=d.dtype) if out is None else out
            out = out.index_add(0, rows, d)
        return out


def attach(encoder_layers: nn.ModuleList, loras: dict[str, LoRA], routing: Routing) -> None:
    """Each task's adapters onto the encoder's layers: every targeted nn.Linear becomes a LoRALinear (in place, its
    Parameters and their names unchanged) holding, per task, that layer's pair."""
    for task, lora in loras.items():
        for layer, pairs in zip(encoder_layers, lora.layer):
            for target, pair in pairs.items():
                m = layer.get_submodule(TARGETS[target])
                if type(m) is not LoRALinear:
                    m.__class__ = LoRALinear  # as torch.nn.utils.parametrize does: same object, new forward
                    m.adapters, m.routing = {}, routing
                m.adapters[task] = pair


def merged(state: dict[str, torch.Tensor], lora: LoRA) -> dict[str, torch.Tensor]:
    """An encoder state dict (Hugging Face names) with one task's adapters folded in: W + (alpha / r) B A per
    targeted layer - the task's encoder as one plain BERT (equal to the adapted one without adapter dropout)."""
    out = dict(state)
    for i, layer in enumerate(lora.layer):
        for t, pair in layer.items():
            key = f"encoder.layer.{i}.{TARGETS[t]}.weight"
            delta = pair.scaling * pair.lora_B.weight.detach().float() @ pair.lora_A.weight.detach().float()
            out[key] = (state[key].float() + delta).to(state[key].dtype)
    return out


def peft_pattern(targets) -> str:
    """PEFT's `target_modules` for these targets, as a full-match pattern: a name alone ("output") would also match
    the attention block's output.dense."""
    return "|".join(rf".*\.layer\.\d+\.{re.escape(TARGETS[t])}" for t in targets)


def peft_adapter(lora: LoRA, base: str) -> tuple[dict, dict]:
    """One task's adapters as a PEFT adapter folder's two files: the tensors of `adapter_model.safetensors` (PEFT's
    names, as `get_peft_model_state_dict` writes them) and `adapter_config.json`, for a transformers BertModel of
    the shared encoder (`base`: where it is)."""
    tensors = {
        f"base_model.model.encoder.layer.{i}.{TARGETS[t]}.{ab}.weight": getattr(pair, ab).weight.detach().float()
        for i, layer in enumerate(lora.layer)
        for t, pair in layer.items()
        for ab in ("lora_A", "lora_B")
    }
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": base,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": peft_pattern(lora.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "task_type": None,
    }
    return tensors, config
