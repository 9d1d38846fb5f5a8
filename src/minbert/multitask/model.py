"""One shared minBERT encoder, one head per task."""

from __future__ import annotations

import torch
from torch import nn

from minbert.model import BertModel
from minbert.model.heads import HEADS, CosinePairHead
from minbert.model.lora import LoRA, Route, merged
from minbert.model.outputs import HeadOutput
from minbert.model.pals import PAL, pal_size
from minbert.multitask.config import LoraConfig, PalsConfig, TaskConfig, num_outputs
from minbert.multitask.data import Batch
from minbert.multitask.frozen import EncoderCache
from minbert.tasks import TASKS, Task


def build_head(spec: Task, cfg: TaskConfig, hidden: int) -> nn.Module:
    return HEADS[cfg.head].build(cfg, hidden, num_outputs(spec, cfg.loss))


class MultitaskModel(nn.Module):
    """Shared encoder `bert`, `heads[task]`, with PALs enabled `pals[task]` inside every encoder layer, with LoRA
    `lora[task]` on the encoder's linear layers; `specs` the tasks' definitions (the config's table,
    TrainConfig.specs: built-in tasks by default)."""

    def __init__(
        self,
        bert: BertModel,
        tasks: dict[str, TaskConfig],
        pals: PalsConfig | None = None,
        specs: dict[str, Task] | None = None,
        lora: LoraConfig | None = None,
    ):
        super().__init__()
        self.bert = bert
        self.tasks = tasks
        self.specs = {n: (specs or TASKS)[n] for n in tasks}
        c = bert.config
        self.heads = nn.ModuleDict({n: build_head(self.specs[n], t, c.hidden_size) for n, t in tasks.items()})
        if pals is not None and pals.enabled:
            size = pals.size or pal_size(c.hidden_size, pals.heads)
            self.pals = nn.ModuleDict(
                {
                    n: PAL(c.hidden_size, c.num_hidden_layers, size, pals.heads, c.attention_probs_dropout_prob)
                    for n in tasks
                }
            )
        else:
            self.pals = None
        self.lora = None
        if lora is not None and lora.enabled:
            self.lora = nn.ModuleDict(
                {n: LoRA(c, lora.rank, lora.alpha, lora.dropout, lora.targets) for n in (lora.tasks or tasks)}
            )
        self.lora_lr_mult = lora.lr_mult if lora is not None else 1.0
        # frozen: true - the encoder's rows computed once (multitask/frozen.py; Runner.cache_encoder sets it)
        self.cache: EncoderCache | None = None

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss reaches: the encoder's (heads, PALs and LoRA belong to one task each)."""
        return [p for p in self.bert.parameters() if p.requires_grad]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters only this task's loss reaches: its head, and its PALs and LoRA adapters when enabled."""
        modules = [self.heads[task]] + ([self.pals[task]] if self.pals is not None else [])
        modules += [self.lora[task]] if self.lora is not None and task in self.lora else []
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def param_groups(self, lr: float, head_lr_mult: float = 1.0, layer_lr_decay: float = 1.0) -> list[dict]:
        """AdamW parameter groups, each with its own "lr": encoder layer i of L at lr * layer_lr_decay^(L - i), the
        embeddings at lr * layer_lr_decay^L, the pooler at lr, heads and PALs at lr * head_lr_mult, LoRA adapters at
        lr * lora.lr_mult."""
        L = len(self.bert.encoder.layer)
        parts = [(self.bert.embeddings, lr * layer_lr_decay**L)]
        parts += [(layer, lr * layer_lr_decay ** (L - i)) for i, layer in enumerate(self.bert.encoder.layer)]
        parts += [(self.bert.pooler, lr), (self.heads, lr * head_lr_mult)]
        if self.pals is not None:
            parts.append((self.pals, lr * head_lr_mult))
        if self.lora is not None:
            parts.append((self.lora, lr * self.lora_lr_mult))
        groups: dict[float, list] = {}  # parameters with equal rates share one group
        for module, rate in parts:
            groups.setdefault(rate, []).extend(p for p in module.parameters() if p.requires_grad)
        return [{"params": ps, "lr": rate} for rate, ps in groups.items() if ps]

    def embed(self, task: str, ids, mask, types=None, embedded=None) -> torch.Tensor:
        """(B, H) sentence embeddings with the task's pooling (and its PALs); `embedded` (B, T, H) replaces the
        embedding layer's output. A frozen encoder's come from its cache."""
        if self.cache is not None:
            return self.cache(task, ids, mask, types)
        return self.encode(task, ids, mask, types, embedded)

    def encode(self, task: str, ids, mask, types=None, embedded=None) -> torch.Tensor:
        """(B, H) what `embed` gives, always from the encoder."""
        adapters = self.pals[task].adapters() if self.pals is not None else None
        pooling = self.tasks[task].pooling
        return self.bert.sentence_embedding(ids, mask, types, pooling, None, adapters, embedded, self.route(task))

    def encoder_state(self, task: str | None = None) -> dict[str, torch.Tensor]:
        """The shared encoder's weights (Hugging Face names); with `task`, its LoRA adapters merged in (the task's
        own encoder as a plain BERT)."""
        state = self.bert.state_dict()
        if task is None or self.lora is None or task not in self.lora:
            return state
        return merged(state, self.lora[task])

    def route(self, task: str) -> Route | None:
        """A one-task pass's LoRA: every row through the task's adapters (None: the task has none)."""
        if self.lora is None or task not in self.lora:
            return None
        return Route(((self.lora[task], None),))

    def embedded(self, task: str, batch: Batch) -> torch.Tensor:
        """(B', T, H) the embedding layer's output for a batch (word + position + token type, LayerNorm, dropout)."""
        return self.bert.embeddings(batch.ids, batch.types)

    def head(self, task: str, emb: torch.Tensor, pair: bool) -> HeadOutput:
        """Head output from embeddings; for bi-encoder pairs `emb` is (2B, H): first sentences, then seconds."""
        if pair:
            u, v = emb.chunk(2)  # (B, H) each
            return self.heads[task](u, v)
        return self.heads[task](emb)

    def forward(self, task: str, batch: Batch, embedded: torch.Tensor | None = None) -> HeadOutput:
        """`embedded` (B', T, H) replaces the embedding layer's output for batch.ids (SMART perturbs it)."""
        return self.head(task, self.embed(task, batch.ids, batch.mask, batch.types, embedded), batch.pair)

    def cosine_scale(self, task: str) -> float | None:
        """The task head's cosine scale, or None when its score is a logit (see Task.soft)."""
        head = self.heads[task]
        return head.scale if isinstance(head, CosinePairHead) else None
