"""Task data, tokenized once: a table of distinct sentences per task and, per example, indices into it (or, for a
cross-encoder, the joint `[CLS] a [SEP] b [SEP]` tokens with their token types).

Keeping distinct sentences lets evaluation encode each sentence once however many pairs it appears in, and lets
a training batch of pairs go through the encoder as one padded batch of sentences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from minbert.data import Example, Tokenizer, bucket_batches, pad, token_batches
from minbert.distributed import shard
from minbert.model.heads import HEADS
from minbert.multitask.config import TaskConfig
from minbert.tasks import Task


@dataclass
class TaskData:
    examples: list[Example]
    labels: torch.Tensor | None  # (N,) or None for unlabeled splits
    sentences: list[list[int]]  # distinct sentences' token ids ([CLS] s [SEP])
    index: list[tuple[int, ...]]  # per example: 1 (sentence) or 2 (pair) indices into `sentences`
    joint: list[list[int]] | None = None  # cross-encoder tokens per example
    types: list[list[int]] | None = None  # cross-encoder token types per example
    # distillation targets per example (multitask/distill.py): (N, C) class probabilities or (N,) soft scores
    teacher: torch.Tensor | None = None

    @property
    def lengths(self) -> list[int]:
        """Per example, the longest input it sends through the encoder (for length bucketing)."""
        if self.joint is not None:
            return [len(j) for j in self.joint]
        return [max(len(self.sentences[i]) for i in ix) for ix in self.index]

    @property
    def inputs(self) -> int:
        """Encoder inputs per example: 2 for a bi-encoder pair, else 1."""
        return 1 if self.joint is not None or not self.index else len(self.index[0])

    def __len__(self) -> int:
        return len(self.examples)


def encode_task(task: Task, examples: list[Example], tok: Tokenizer, cfg: TaskConfig) -> TaskData:
    labels = None if examples[0].label is None else torch.tensor([e.label for e in examples], dtype=torch.float32)
    if HEADS[cfg.head].cross:
        joint, types = tok.encode_pairs([e.texts[0] for e in examples], [e.texts[1] for e in examples], cfg.max_length)
        return TaskData(examples, labels, [], [], joint, types)
    table: dict[str, int] = {}
    for e in examples:
        for s in e.texts:
            table.setdefault(s, len(table))
    sentences = tok.encode(list(table), cfg.max_length)
    return TaskData(examples, labels, sentences, [tuple(table[s] for s in e.texts) for e in examples])


@dataclass
class Batch:
    """Encoder inputs of one task's batch: `ids`, `mask` (B', T) and `types` for cross-encoders. For bi-encoder
    pairs the B' = 2B rows are the first sentences then the second ones; `labels` (B,)."""

    ids: torch.Tensor
    mask: torch.Tensor
    types: torch.Tensor | None
    labels: torch.Tensor | None
    pair: bool  # bi-encoder: split the B' embeddings into u and v
    # (B',) each row's index in the task's table of distinct sentences: equal keys are equal texts, which in-batch
    # losses must not count as negatives of each other (None for cross-encoded pairs)
    keys: torch.Tensor | None = None
    teacher: torch.Tensor | None = None  # (B, C) or (B,) distillation targets
    # the batch on the CPU that this one was moved from: what the host reads (the fused pass's flat layout) without
    # asking a GPU for its values
    host: "Batch | None" = None

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            move(self.ids),
            move(self.mask),
            move(self.types),
            move(self.labels),
            self.pair,
            move(self.keys),
            move(self.teacher),
            self.host or (self if self.ids.device.type == "cpu" else None),
        )

    def on_host(self) -> "Batch":
        """This batch's values on the CPU: its host copy, or itself (one copy from the device where it has none)."""
        return self.host or (self if self.ids.device.type == "cpu" else self.to("cpu"))


def make_batch(data: TaskData, idx: list[int], pad_id: int) -> Batch:
    """A batch of tokens, with its examples' distillation targets when the data has them."""
    batch = _inputs(data, idx, pad_id)
    if data.teacher is not None:
        batch.teacher = data.teacher[idx]
    return batch


def _inputs(data: TaskData, idx: list[int], pad_id: int) -> Batch:
    labels = None if data.labels is None else data.labels[idx]
    if data.joint is not None:
        ids, mask = pad([data.joint[i] for i in idx], pad_id)
        types, _ = pad([data.types[i] for i in idx], 0)
        return Batch(ids, mask, types, labels, pair=False)
    sides = len(data.index[idx[0]])
    keys = [data.index[i][s] for s in range(sides) for i in idx]  # all first sentences, then seconds
    ids, mask = pad([data.sentences[k] for k in keys], pad_id)
    return Batch(ids, mask, None, labels, pair=sides == 2, keys=torch.tensor(keys))


class BatchStream:
    """A task's endless sequence of training batches: pass p over the data is bucketed with seed (seed, task, p).
    Its whole state is `consumed`, the number of batches taken so far, so a resumed run continues exactly.
    `tokens` > 0: batches by padded tokens (token_batches; `inputs` encoder inputs per example), so a pass's number
    of batches depends on its shuffle and the stream finds its place by counting the passes before it."""

    def __init__(
        self, name: str, lengths: list[int], batch_size: int, seed: int, consumed: int = 0, tokens: int = 0,
        inputs: int = 1,
    ):  # fmt: skip
        self.name, self.lengths, self.batch_size, self.seed = name, lengths, batch_size, seed
        self.tokens, self.inputs = tokens, inputs
        self.consumed = consumed
        self._pass, self._start, self._batches = 0, 0, self.batches(0)  # pass p's batches begin at `_start`
        self.per_pass = len(self._batches)  # the first pass's (with tokens, later passes may differ by a few)

    def batches(self, p: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}/{self.name}/{p}")
        if self.tokens:
            return token_batches(self.lengths, self.tokens, rng, self.inputs)
        return bucket_batches(self.lengths, self.batch_size, rng)

    def next(self) -> list[int]:
        if not self.tokens:  # every pass has per_pass batches
            p, i = divmod(self.consumed, self.per_pass)
            if p != self._pass:
                self._pass, self._batches = p, self.batches(p)
        else:
            while self.consumed - self._start >= len(self._batches):  # on to the pass `consumed` falls in
                self._start += len(self._batches)
                self._pass += 1
                self._batches = self.batches(self._pass)
            i = self.consumed - self._start
        self.consumed += 1
        return self._batches[i]


def step_batches(
    data: dict[str, TaskData],
    idx: dict[str, list[int]],
    pad_id: int,
    device,
    rank: int = 0,
    world: int = 1,
    accum: int = 1,
) -> list[tuple[dict[str, Batch], dict[str, float]]]:
    """This process's part of one step: its share of every task's global batch `idx`, cut into `accum`
    micro-batches, each task with the fraction of its global batch it holds (so the fractions over micro-batches
    and processes sum to 1 and the summed gradient is the global batch's). A share too small to split gets a
    one-example stand-in with fraction 0, so every process runs every task in every micro-batch (DDP expects it)."""
    micro: list[tuple[dict[str, Batch], dict[str, float]]] = [({}, {}) for _ in range(accum)]
    for name, glob in idx.items():
        mine = shard(glob, rank, world)
        bounds = [len(mine) * k // accum for k in range(accum + 1)]
        for k, (batches, fracs) in enumerate(micro):
            part = mine[bounds[k] : bounds[k + 1]]  # contiguous: similar lengths, little padding
            batches[name] = make_batch(data[name], part or glob[:1], pad_id).to(device)
            fracs[name] = len(part) / len(glob)
    return micro
