"""Fused multitask forward: all sentences of a step's task batches (SST sentences, both sides of Quora and STS pairs,
cross-encoded pairs) go through the encoder as one packed batch instead of one pass per task.

Padding every sentence to the step's longest one would waste most of the compute (SST batches run ~2x longer than
Quora's), so sentences are packed: sorted longest first, each placed in the first row with room (rows as wide as
the longest sentence). A token attends only to its own sentence (block-diagonal mask) and positions restart at
each sentence, so every sentence gets exactly the token states it would get alone: the fused loss equals the
per-task passes' (tests/test_fused.py, to 1e-5 in fp32), with one encoder call, one embedding gradient and one set
of weight casts per step instead of one per task. Per-task graphs (PCGrad, GradVac, conflict statistics) and PALs
(a different adapter per task inside every layer) keep separate passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from minbert.model.bert import pool
from minbert.multitask.data import Batch


@dataclass
class Packed:
    ids: torch.Tensor  # (R, T) packed token ids
    types: torch.Tensor  # (R, T) token types
    positions: torch.Tensor  # (R, T) position within each sentence
    mask: torch.Tensor  # (R, T, T) which keys each query sees: its own sentence
    gather: torch.Tensor  # (S, L) flat index (row * T + column) of each sentence's tokens, L = longest sentence
    lengths: torch.Tensor  # (S,) tokens per sentence
    spans: dict[str, tuple[int, int]]  # task -> its sentences [start, end) among the S, in the batch's row order


def pack(batches: dict[str, Batch]) -> Packed:
    seqs, spans = [], {}  # per sentence: (token ids, token types or None), as numpy rows (cheap to slice)
    for name, b in batches.items():
        n = b.mask.sum(1).tolist()
        ids, types = b.ids.cpu().numpy(), None if b.types is None else b.types.cpu().numpy()
        spans[name] = (len(seqs), len(seqs) + len(n))
        seqs += [(ids[i, :k], None if types is None else types[i, :k]) for i, k in enumerate(n)]
    lengths = [len(s[0]) for s in seqs]
    T = L = max(lengths)
    free: list[int] = []  # room left per row
    place = [(0, 0)] * len(seqs)  # (row, start) per sentence
    for i in sorted(range(len(seqs)), key=lambda i: -lengths[i]):  # first fit, longest first
        r = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if r is None:
            r = len(free)
            free.append(T)
        place[i] = (r, T - free[r])
        free[r] -= lengths[i]
    R = len(free)
    ids, types = np.zeros((R, T), dtype=np.int64), np.zeros((R, T), dtype=np.int64)
    positions, segment = np.zeros((R, T), dtype=np.int64), np.full((R, T), -1, dtype=np.int64)
    gather = np.zeros((len(seqs), L), dtype=np.int64)
    steps = np.arange(L)
    for i, ((tok, typ), (r, start)) in enumerate(zip(seqs, place)):
        k = lengths[i]
        ids[r, start : start + k] = tok
        if typ is not None:
            types[r, start : start + k] = typ
        positions[r, start : start + k] = steps[:k]
        segment[r, start : start + k] = i
        gather[i] = r * T + start + np.where(steps < k, steps, 0)  # past the end: the first token (masked out later)
    device = batches[next(iter(batches))].ids.device
    seg = torch.from_numpy(segment).to(device)
    same = seg[:, :, None] == seg[:, None, :]  # (R, T, T)
    # padding slots (segment -1) see only themselves, so their states stay finite and unused
    mask = (same & (seg[:, :, None] >= 0)) | torch.eye(T, dtype=torch.bool, device=device)
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return Packed(to(ids), to(types), to(positions), mask, to(gather), torch.tensor(lengths, device=device), spans)


def fused_forward(model, batches: dict[str, Batch]) -> dict[str, dict]:
    """Each task's head output, as `model(task, batch)` would give it, from one encoder pass."""
    p = pack(batches)
    bert = model.bert
    hidden = bert.encode(bert.embeddings(p.ids, p.types, None, p.positions), p.mask)  # (R, T, H)
    R, T, H = hidden.shape
    tokens = hidden.reshape(R * T, H)[p.gather]  # (S, L, H): each sentence's token states, left-aligned
    valid = torch.arange(p.gather.shape[1], device=hidden.device) < p.lengths[:, None]  # (S, L)
    out = {}
    for name, b in batches.items():
        s, e = p.spans[name]
        emb = pool(tokens[s:e], valid[s:e], model.tasks[name].pooling, bert.pooler)  # (B', H)
        out[name] = model.head(name, emb, b.pair)
    return out
