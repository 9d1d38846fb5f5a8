"""Unpadded ("varlen") encoding: the tokens of many sentences as one flat (N, H) tensor with no padding at all.

Everything in a BERT layer except attention works token by token, so the linear layers, GELU, LayerNorm and
dropout run on exactly the N real tokens. Attention needs each sentence's tokens side by side: the sentences are
sorted longest first and cut into a few buckets of similar length; each bucket is copied into a small zero-padded
(B, T) grid for attention only, and its real tokens are taken back out. A token sees only its own sentence, and
positions restart at every sentence, so every sentence gets exactly the states it would get in a batch of its own.

Two callers build this layout: the fused multitask pass (all tasks' sentences, model/multitask.py) and the CPU's
encoder (model/fast/cpu.py), which runs a right-padded batch with enough padding this way and puts the states back
in the (B, T) grid with zeros at padding. `SelfAttention` and `Encoder` are the textbook modules that also take a
flat layout; every device's fast path builds on them.

Flat tokens are bucket-major: bucket 0's sentences (longest first), each sentence's tokens contiguous, then
bucket 1's, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minbert.model.bert import POOLINGS, BertEncoder, BertPooler, BertSelfAttention
from minbert.model.lora import LoRALinear

# one bucket costs about as much fixed work (a gather, a few small kernels per layer, forward and backward) as
# this many (sentence x token^2) units of attention work; measured only roughly, the split is not sensitive to it
BUCKET_COST = 3000
# `unpad` leaves a batch with fewer padding tokens than this padded: regrouping tokens for attention costs a few
# small kernels per layer, which outweigh the work saved on a little padding (benchmarks/bench_multitask.py
# --min-padding compares values of it on the quickstart's batches)
MIN_PADDING = 32


@dataclass
class Varlen:
    """Where each sentence's tokens sit in the flat (N, H) tensor and how attention regroups them."""

    lengths: torch.Tensor  # (S,) tokens per sentence, in flat order
    starts: torch.Tensor  # (S,) flat index of each sentence's first token
    segment: torch.Tensor  # (N,) which sentence each flat token belongs to
    sizes: list[int]  # flat tokens per bucket
    grids: list[tuple[int, int]]  # per bucket (B, T): its sentences and its longest sentence's length
    mask: list[torch.Tensor | None]  # per bucket (B, 1, 1, T) which keys are real
    keep: list[torch.Tensor | None]  # per bucket (n,) the real tokens' positions in its (B * T) grid; None: no padding
    fill: list[torch.Tensor | None]  # per bucket (B * T,) which of its n real tokens fills each grid slot, n: padding
    # the jagged layout instead of buckets (`layout(..., jagged=True)`): attention over the whole
    # flat run as nested-jagged tensors, each sentence [offsets[i], offsets[i + 1]); the longest and shortest sentence
    offsets: torch.Tensor | None = None  # (S + 1,)
    max_len: int = 0
    min_len: int = 0

    @property
    def positions(self) -> torch.Tensor:
        """(N,) position of each token within its sentence."""
        return torch.arange(len(self.segment), device=self.segment.device) - self.starts[self.segment]


def buckets(lengths: list[int], cost: float = BUCKET_COST) -> list[int]:
    """Bucket ends for lengths sorted longest first: minimizes the sum over buckets of B * T^2 + cost, the attention
    work of padding each bucket to its longest sentence plus a fixed cost per bucket (dynamic programming).
    A bucket only ever starts where the length changes: moving its start back over sentences as long as its
    first one adds no padding and takes them out of a bucket padded at least as far."""
    n = np.asarray(lengths, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, n[1:] != n[:-1]])  # candidate bucket starts: the first of each length
    ends = np.r_[starts[1:], len(n)]  # candidate bucket ends
    best = np.zeros(len(starts) + 1)  # best[j]: cheapest split of the sentences before ends[j - 1]
    cut = np.zeros(len(starts) + 1, dtype=np.int64)
    for j in range(1, len(starts) + 1):
        i = np.arange(j)  # last bucket = candidate starts i .. ends[j - 1], padded to the length at starts[i]
        c = best[:j] + (ends[j - 1] - starts[i]) * n[starts[i]] ** 2 + cost
        cut[j] = int(np.argmin(c))  # the first minimum: fewer, longer buckets on ties
        best[j] = c[cut[j]]
    bounds, j = [], len(starts)
    while j:
        bounds.append(int(ends[j - 1]))
        j = cut[j]
    return bounds[::-1]


# device types whose flat layouts are jagged by default: none yet. On CUDA, nested-jagged SDPA runs variable-length
# flash kernels with no buckets; it passes its parity tests here on the CPU (tests/test_fused.py), and becomes CUDA's
# default once benchmarks/gpu_check.py has run it on a GPU and measured it against the buckets (issue 44)
JAGGED_DEVICES: frozenset[str] = frozenset()


def layout(lengths: list[int], device, cost: float = BUCKET_COST, jagged: bool | None = None) -> Varlen:
    """The flat layout of sentences with these lengths, given longest first: in buckets, or `jagged` (None: where the
    device type is in JAGGED_DEVICES), built on the host from `lengths` so that the device is never asked for a
    shape."""
    assert all(a >= b for a, b in zip(lengths, lengths[1:])), "lengths must be sorted longest first"
    n = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    # non_blocking: a GPU takes the copy without the host waiting on it (a blocking copy is a sync)
    to = lambda a: torch.from_numpy(a).to(device, non_blocking=True)  # noqa: E731
    segment = np.repeat(np.arange(len(n)), n)
    if jagged if jagged is not None else torch.device(device).type in JAGGED_DEVICES:
        offsets = to(np.concatenate([starts, [n.sum()]]))
        return Varlen(to(n), to(starts), to(segment), [], [], [], [], [], offsets, int(n[0]), int(n[-1]))
    sizes, grids, mask, keep, fill = [], [], [], [], []
    begin = 0
    for end in buckets(lengths, cost):
        ln = n[begin:end]
        B, T = len(ln), int(ln[0])
        sizes.append(int(ln.sum()))
        grids.append((B, T))
        if (ln == T).all():  # no padding: the bucket's tokens are already a (B, T) grid
            mask.append(None), keep.append(None), fill.append(None)
        else:
            real = np.arange(T)[None, :] < ln[:, None]  # (B, T)
            mask.append(to(real)[:, None, None, :])
            keep.append(to(np.flatnonzero(real)))
            fill.append(grid_index(keep[-1], B * T))
        begin = end
    return Varlen(to(n), to(starts), to(segment), sizes, grids, mask, keep, fill)


def grid_index(positions: torch.Tensor, slots: int) -> torch.Tensor:
    """(slots,) for each slot of a grid the row of `positions` (each row's slot, all distinct) that fills it, and
    len(positions) - the zero row `to_grid` appends - for the slots no row fills."""
    index = torch.full((slots,), len(positions), dtype=torch.int64, device=positions.device)
    index[positions] = torch.arange(len(positions), device=positions.device)
    return index


def to_grid(rows: torch.Tensor, keep: torch.Tensor, slots: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """(n, C) rows -> (slots, C): row i at slot keep[i], zeros at the other slots. Two ways to the same values, bit
    for bit (tests/test_fused.py), each where it was the faster on CPU (the retired benchmark "bench_regroup", its
    record in benchmarks/log/): with no backward to follow, a gather from the rows with one zero row appended
    (`fill`: `grid_index(keep, slots)`, made here when not given); when one follows, zeros + index_copy, whose
    backward - a gather - costs less than the gather's own, an index_add, on buckets this small."""
    if torch.is_grad_enabled() and rows.requires_grad:
        return rows.new_zeros(slots, rows.shape[1]).index_copy(0, keep, rows)  # (slots, C)
    fill = grid_index(keep, slots) if fill is None else fill
    return torch.cat([rows, rows.new_zeros(1, rows.shape[1])]).index_select(0, fill)  # (slots, C)


def attention(qkv: torch.Tensor, v: Varlen, n_head: int, attend) -> torch.Tensor:
    """(N, 3H) flat queries, keys and values -> (N, H) attention output. `attend(q, k, v, mask)` is the padded
    attention on (B, nh, T, hs) tensors with a (B, 1, 1, T) mask or None, as the caller runs it."""
    H3 = qkv.shape[1]
    H = H3 // 3
    out = []
    # split, to_grid and index_select rather than slicing and fancy indexing: their backwards are a concatenation,
    # gathers and an index_add (slicing's zero-fills all N rows; fancy indexing's is an accumulating index_put, many
    # times slower than index_add on CPU in an ad-hoc timing)
    for part, (B, T), mask, keep, fill in zip(qkv.split(v.sizes), v.grids, v.mask, v.keep, v.fill):
        if keep is None:
            grid = part.view(B, T, H3)  # (B, T, 3H)
        else:  # padding slots are zero: masked as keys, and their outputs are dropped below
            grid = to_grid(part, keep, B * T, fill).view(B, T, H3)  # (B, T, 3H)
        q, k, val = split_heads(grid, n_head)  # (B, nh, T, hs) each
        y = attend(q, k, val, mask).transpose(1, 2).reshape(B * T, H)  # (B*T, H)
        out.append(y if keep is None else y.index_select(0, keep))  # (n, H): the real tokens, in flat order
    return torch.cat(out)  # (N, H)


def jagged_attention(qkv: torch.Tensor, v: Varlen, n_head: int, dropout_p: float) -> torch.Tensor:
    """(N, 3H) flat queries, keys and values -> (N, H): attention within each sentence of a jagged layout, the whole
    run at once as nested-jagged tensors (PyTorch's variable-length SDPA: on CUDA its flash and memory-efficient
    kernels, no padding and no regrouping; elsewhere its reference math)."""
    N, H3 = qkv.shape
    H = H3 // 3

    def nested(t: torch.Tensor) -> torch.Tensor:  # (N, nh, hs) -> (S, nh, j, hs); SDPA takes contiguous values only
        nt = torch.nested.nested_tensor_from_jagged(
            t.contiguous(), v.offsets, min_seqlen=v.min_len, max_seqlen=v.max_len
        )
        return nt.transpose(1, 2)

    q, k, val = qkv.view(N, 3, n_head, H // n_head).unbind(1)  # (N, nh, hs) each
    y = F.scaled_dot_product_attention(nested(q), nested(k), nested(val), dropout_p=dropout_p)  # (S, nh, j, hs)
    return y.transpose(1, 2).values().reshape(N, H)


def split_heads(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, 3H) queries, keys and values -> q, k, v (B, nh, T, hs). On a CPU each is contiguous, one copy of all
    three: the batched matmuls of CPU attention would otherwise copy each permuted operand themselves, forward and
    backward, one call per operand; the values are the same bit for bit (tests/test_fused.py). Elsewhere
    they stay views, as SDPA's GPU kernels take them."""
    B, T, H3 = qkv.shape
    heads = qkv.view(B, T, 3, n_head, H3 // 3 // n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
    return (heads.contiguous() if qkv.device.type == "cpu" else heads).unbind(0)


def unpad(attention_mask) -> tuple[Varlen, torch.Tensor] | None:
    """A padded batch's flat layout: (B, T) 0/1 mask -> (Varlen, (N,) each real token's index in the (B * T) grid).
    None when there is little to gain or the layout cannot say it: fewer than MIN_PADDING padding tokens, an empty
    row, or a mask that is not right padding (positions would not restart at 0)."""
    if attention_mask is None or isinstance(attention_mask, Varlen):
        return None
    m = attention_mask.bool()
    B, T = m.shape
    lengths = m.sum(1)  # (B,)
    if B * T - int(lengths.sum()) < MIN_PADDING or int(lengths.min()) == 0:
        return None
    if not torch.equal(m, torch.arange(T, device=m.device) < lengths[:, None]):
        return None
    order = torch.argsort(lengths, descending=True, stable=True)  # (B,) rows longest first, as layout wants
    ln = lengths[order]
    v = layout(ln.tolist(), m.device)
    return v, order.repeat_interleave(ln) * T + v.positions  # (N,) row * T + position, in flat order


def pool(hidden: torch.Tensor, v: Varlen, pooling: str, pooler: BertPooler) -> torch.Tensor:
    """(N, H) flat token states -> (S, H) sentence embeddings in flat order, as bert.pool gives them padded."""
    assert pooling in POOLINGS, pooling
    if pooling == "mean":
        sums = hidden.new_zeros(len(v.lengths), hidden.shape[1]).index_add(0, v.segment, hidden)  # (S, H)
        return sums / v.lengths[:, None].to(hidden.dtype)
    first = hidden.index_select(0, v.starts)  # (S, H) the [CLS] states
    return pooler(first[:, None]) if pooling == "pooler" else first  # the pooler reads position 0 of (S, 1, H)


class SelfAttention(BertSelfAttention):
    """BertSelfAttention that also takes flat tokens (N, H) with their Varlen layout: q, k and v from one product,
    regrouped per bucket for `attend`."""

    def forward(self, x, mask):
        if not isinstance(mask, Varlen):
            return super().forward(x, mask)
        if mask.offsets is not None:  # the jagged layout
            return jagged_attention(self.qkv(x), mask, self.n_head, self.dropout_p if self.training else 0.0)
        return attention(self.qkv(x), mask, self.n_head, self.attend)  # (N, H)

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., 3H) queries, keys and values side by side from one matmul of the concatenated weights
        (the parameters keep their Hugging Face names); layers that are not plain linear ones (quantized, oneDNN's)
        one product each."""
        layers = (self.query, self.key, self.value)
        if not all(type(m) in (nn.Linear, LoRALinear) for m in layers):
            return torch.cat([m(x) for m in layers], -1)  # (..., 3H), each with its own adapter if any
        w = torch.cat([m.weight for m in layers])  # (3H, H)
        b = torch.cat([m.bias for m in layers])  # (3H,)
        return with_deltas(F.linear(x, w, b), x, layers)


def with_deltas(y: torch.Tensor, x: torch.Tensor, layers) -> torch.Tensor:
    """(..., 3H) q, k, v products of x plus each layer's adapter delta (model/lora.py) on its third, if any."""
    deltas = [m.delta(x) if isinstance(m, LoRALinear) else None for m in layers]
    if all(d is None for d in deltas):
        return y
    zero = x.new_zeros(*x.shape[:-1], x.shape[-1])
    return y + torch.cat([zero if d is None else d.to(y.dtype) for d in deltas], -1)  # (..., 3H)


class Encoder(BertEncoder):
    """BertEncoder that also takes flat tokens (N, H) with a Varlen layout in place of the (B, T) mask."""

    def forward(self, x, attention_mask=None):
        if isinstance(attention_mask, Varlen):
            return self.run(x, attention_mask)
        return super().forward(x, attention_mask)
