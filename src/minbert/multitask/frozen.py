"""`frozen: true` as a cached encoder: the encoder never changes, so each distinct input is embedded once at setup
(eval mode, no dropout, no gradient; `Runner.cache_encoder`) and every later pass - training batches, evaluation,
prediction - looks its row up instead of running the encoder. `MultitaskModel.embed` is the one place that consults
it; batches, heads and the runner are the same as with a trained encoder.

A row is keyed by its task and its tokens (the unpadded ids, and the token types of a cross-encoder's joint pair),
so train, dev and test splits share one table and a batch needs no index into any of them. An input that was not
embedded at setup is encoded when first seen, in eval mode, and kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class EncoderCache:
    def __init__(self, encode: Callable[..., torch.Tensor], encoder: nn.Module):
        """`encode(task, ids, mask, types)` -> (B, H): the real encoder `encoder`, for inputs not cached yet."""
        self.encode, self.encoder = encode, encoder
        self.rows: dict[tuple, torch.Tensor] = {}  # (task, ids, types) -> (H,) float32

    def add(self, task: str, seqs: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None, emb: torch.Tensor):
        """Keep `emb` (B, H), the encoder's rows for the unpadded inputs `seqs` (and their token types)."""
        kinds = types if types is not None else [()] * len(seqs)
        for s, k, row in zip(seqs, kinds, emb.detach().float()):
            self.rows[(task, tuple(s), tuple(k))] = row

    def __call__(self, task: str, ids: torch.Tensor, mask: torch.Tensor, types=None) -> torch.Tensor:
        """(B, H) the rows of a padded batch `ids`, `mask` (B, T)."""
        lengths = mask.sum(1).tolist()
        seqs = [r[:n] for r, n in zip(ids.tolist(), lengths)]
        kinds = [r[:n] for r, n in zip(types.tolist(), lengths)] if types is not None else [[]] * len(seqs)
        keys = [(task, tuple(s), tuple(k)) for s, k in zip(seqs, kinds)]
        missing = [i for i, key in enumerate(keys) if key not in self.rows]
        if missing:
            self._encode_missing(task, ids, mask, types, missing, seqs, kinds)
        return torch.stack([self.rows[key] for key in keys])

    @torch.inference_mode(False)  # rows kept for training, whose backward may not read inference tensors
    @torch.no_grad()
    def _encode_missing(self, task, ids, mask, types, missing, seqs, kinds) -> None:
        pick = torch.tensor(missing, device=ids.device)
        was = self.encoder.training
        self.encoder.eval()
        try:
            emb = self.encode(task, ids[pick], mask[pick], None if types is None else types[pick])
        finally:
            self.encoder.train(was)
        self.add(task, [seqs[i] for i in missing], [kinds[i] for i in missing] if types is not None else None, emb)
