"""Dynamic padding and length-bucketed batches: pad each batch to its own longest sequence, and put sequences of
similar length together so that little of the compute goes to padding."""

from __future__ import annotations

import random

import numpy as np
import torch

from minbert.runs import release_memory


def bucket_batches(
    lengths: list[int], batch_size: int, rng: random.Random | None = None, chunk: int = 50
) -> list[list[int]]:
    """Index batches. With rng (training): shuffle, sort within chunks of `chunk` batches by length, shuffle the
    batches. Without rng (evaluation): sort everything by length, for the least padding; order is restored by
    the caller through the indices."""
    n = len(lengths)
    if rng is None:
        order = sorted(range(n), key=lengths.__getitem__)
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    order = list(range(n))
    rng.shuffle(order)
    span = batch_size * chunk
    batches = []
    for s in range(0, n, span):
        part = sorted(order[s : s + span], key=lengths.__getitem__)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def token_batches(
    lengths: list[int], tokens: int, rng: random.Random, inputs: int = 1, chunk: int = 50
) -> list[list[int]]:
    """Training batches by tokens: shuffle, sort within chunks (about `chunk` batches each) by length, and fill each
    batch with the next examples while it stays within `tokens` padded tokens (examples x `inputs` per example x the
    batch's longest length; one example at least); shuffle the batches. The token-count sibling of bucket_batches."""
    n = len(lengths)
    order = list(range(n))
    rng.shuffle(order)
    mean = max(1, round(sum(lengths) / max(1, n)))
    span = chunk * max(1, tokens // (inputs * mean))  # examples per chunk: `chunk` batches at the mean length
    batches = []
    for s in range(0, n, span):
        batch: list[int] = []
        for i in sorted(order[s : s + span], key=lengths.__getitem__):  # ascending: i is the longest so far
            if batch and (len(batch) + 1) * inputs * lengths[i] > tokens:
                batches.append(batch)
                batch = []
            batch.append(i)
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) padded ids and (B, T) attention mask, T = the longest sequence in this batch."""
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), T), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the token slots in `batches` that are padding."""
    real = sum(lengths[i] for b in batches for i in b)
    slots = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - real / slots


def trimming(batches, every: int = 8):
    """The batches of an evaluation, with the heap trimmed (runs.release_memory) after every `every` of them:
    batches of every length fragment the heap there too."""
    for n, idx in enumerate(batches, 1):
        yield idx
        if n % every == 0:
            release_memory()
