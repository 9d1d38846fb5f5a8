"""Fused multitask forward: all sentences of a step's task batches (SST sentences, both sides of Quora and STS pairs,
cross-encoded pairs) go through the encoder in one pass instead of one pass per task.

The pass is unpadded (model/varlen.py): the step's sentences, sorted longest first across all tasks, are laid end to
end as one flat run of tokens, so the linear layers, GELU, LayerNorm and dropout touch only real tokens, and
attention runs per bucket of similar-length sentences. Per-task passes run unpadded too (Speed.unpad, given
enough padding), each over its own batch; pooling all tasks' sentences lets the buckets cut wherever lengths change.
Every sentence gets exactly the token states it would get alone: the fused loss equals the padded per-task passes'
(tests/test_fused.py, to 1e-5 in fp32), with one encoder call (larger matmuls, fewer small kernels), one embedding
gradient and one set of weight casts per step instead of one per task. Per-task graphs (PCGrad, GradVac, conflict
statistics) and PALs (a different adapter per task inside every layer) keep separate passes. Per-task LoRA adapters
share the pass: each task's tokens go through its own low-rank products (a `Route` over the flat tokens,
model/lora.py), equal to one pass per task (tests/test_lora.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from minbert.model.bert import pool
from minbert.model.lora import Route
from minbert.model.outputs import HeadOutput
from minbert.model.varlen import Varlen, layout
from minbert.multitask.data import Batch


@dataclass
class Flat:
    ids: torch.Tensor  # (N,) every sentence's tokens, longest sentence first, no padding
    types: torch.Tensor | None  # (N,) token types (cross-encoded pairs), None when no task has them
    layout: Varlen  # where each sentence sits among the N tokens
    rank: torch.Tensor  # (S,) each sentence's place in the flat order; sentences numbered task by task
    spans: dict[str, tuple[int, int]]  # task -> its sentences [start, end) among the S, in the batch's row order
    tokens: dict[str, torch.Tensor] | None  # task -> (n_task,) its tokens' places among the N (for LoRA's routes)


def flatten(batches: dict[str, Batch], tokens: bool = False) -> Flat:
    """`tokens`: also each task's token places (per-task LoRA routes them)."""
    seqs, types, spans = [], [], {}  # per sentence: token ids and token types, numpy rows (cheap to slice)
    has_types = any(b.types is not None for b in batches.values())
    for name, b in batches.items():
        n = b.mask.sum(1).tolist()
        ids = b.ids.cpu().numpy()
        spans[name] = (len(seqs), len(seqs) + len(n))
        seqs += [ids[i, :k] for i, k in enumerate(n)]
        if has_types:  # cross-encoded pairs: their token types; every other task's sentences are type 0
            typ = None if b.types is None else b.types.cpu().numpy()
            types += [np.zeros(k, dtype=np.int64) if typ is None else typ[i, :k] for i, k in enumerate(n)]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # longest first (stable)
    rank = np.empty(len(seqs), dtype=np.int64)
    rank[order] = np.arange(len(seqs))
    device = batches[next(iter(batches))].ids.device
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    places = None
    if tokens:
        owner = np.empty(len(seqs), dtype=np.int64)  # each sentence's task, numbered in batch order
        for t, (s, e) in enumerate(spans.values()):
            owner[s:e] = t
        token_owner = np.repeat(owner[order], [len(seqs[i]) for i in order])  # (N,) each flat token's task
        places = {name: to(np.flatnonzero(token_owner == t)) for t, name in enumerate(spans)}
    return Flat(
        to(np.concatenate([seqs[i] for i in order])),
        to(np.concatenate([types[i] for i in order])) if has_types else None,
        layout([len(seqs[i]) for i in order], device),
        to(rank),
        spans,
        places,
    )


def fused_forward(model, batches: dict[str, Batch]) -> dict[str, HeadOutput]:
    """Each task's head output, as `model(task, batch)` would give it, from one encoder pass."""
    f = flatten(batches, tokens=model.lora is not None)
    bert = model.bert
    route = None
    if model.lora is not None:  # each task's tokens through its own adapters
        route = Route(tuple((model.lora[n], f.tokens[n]) for n in batches if n in model.lora))
    x = bert.encode(bert.embeddings(f.ids, f.types, None, f.layout.positions), f.layout, None, route)  # (N, H)
    kinds = {model.tasks[n].pooling for n in batches}
    emb = {k: pool(x, f.layout, k, bert.pooler) for k in kinds}  # (S, H) each, flat order
    out = {}
    for name, b in batches.items():
        s, e = f.spans[name]
        mine = emb[model.tasks[name].pooling].index_select(0, f.rank[s:e])  # (B', H) in the batch's row order
        out[name] = model.head(name, mine, b.pair)
    return out
