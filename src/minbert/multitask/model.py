"""One shared minBERT encoder, one head per task."""

from __future__ import annotations

import torch
from torch import nn

from minbert.model import BertModel
from minbert.model.heads import ConcatPairHead, CosinePairHead, SentenceHead
from minbert.multitask.config import TaskConfig, num_outputs
from minbert.multitask.data import Batch
from minbert.tasks import TASKS


def build_head(name: str, cfg: TaskConfig, hidden: int) -> nn.Module:
    task = TASKS[name]
    if cfg.head == "cosine":
        return CosinePairHead(hidden, scale=cfg.cosine_scale, dropout=cfg.dropout, extra_layers=cfg.extra_layers)
    if cfg.head == "concat":
        return ConcatPairHead(hidden, num_outputs(task, cfg), cfg.dropout, cfg.features, cfg.extra_layers)
    return SentenceHead(hidden, num_outputs(task, cfg), cfg.dropout, cfg.extra_layers)  # linear, cross


def decision_threshold(head: nn.Module) -> float:
    """Where a one-score head says "yes": half the cosine scale, or 0 for a logit."""
    return head.scale / 2 if isinstance(head, CosinePairHead) else 0.0


class MultitaskModel(nn.Module):
    def __init__(self, bert: BertModel, tasks: dict[str, TaskConfig]):
        super().__init__()
        self.bert = bert
        self.tasks = tasks
        self.heads = nn.ModuleDict({n: build_head(n, c, bert.config.hidden_size) for n, c in tasks.items()})

    def embed(self, task: str, ids, mask, types=None) -> torch.Tensor:
        """(B, H) sentence embeddings with the task's pooling."""
        return self.bert.sentence_embedding(ids, mask, types, pooling=self.tasks[task].pooling)

    def head(self, task: str, emb: torch.Tensor, pair: bool) -> dict:
        """Head output from embeddings; for bi-encoder pairs `emb` is (2B, H): first sentences, then seconds."""
        if pair:
            u, v = emb.chunk(2)  # (B, H) each
            return self.heads[task](u, v)
        return self.heads[task](emb)

    def forward(self, task: str, batch: Batch) -> dict:
        return self.head(task, self.embed(task, batch.ids, batch.mask, batch.types), batch.pair)

    def threshold(self, task: str) -> float:
        return decision_threshold(self.heads[task])
