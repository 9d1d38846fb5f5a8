"""A frozen encoder's sentence embeddings, computed once per data set (`frozen: true`): the heads train and are
evaluated on these rows, so an epoch costs the heads alone."""

from __future__ import annotations

import torch

from minbert.data import bucket_batches
from minbert.data.batching import trimming
from minbert.multitask.data import TaskData, make_batch
from minbert.multitask.evaluate import encode_sentences
from minbert.multitask.model import MultitaskModel
from minbert.runs import autocast


@torch.no_grad()  # not inference_mode: the heads' backward reads these rows
def cache_features(
    model: MultitaskModel, data: dict[str, dict[str, TaskData]], pad_id: int, device, precision: str, batch_size=64
) -> None:
    """Sets `features` on every split's TaskData, from the encoder in eval mode (no dropout)."""
    model.eval()
    for split in data.values():
        for task, d in split.items():
            d.features = None  # make_batch below must run the encoder
            d.features = task_features(model, task, d, pad_id, device, precision, batch_size)


def task_features(
    model: MultitaskModel, task: str, data: TaskData, pad_id: int, device, precision: str, batch_size: int
) -> torch.Tensor:
    """(S, H) per distinct sentence, or for a cross-encoder (N, H) per example (the joint pair's embedding)."""
    if data.joint is None:
        return encode_sentences(model, task, data.sentences, pad_id, device, precision, batch_size)
    out = torch.empty(len(data), model.bert.config.hidden_size, device=device)
    for idx in trimming(bucket_batches(data.lengths, batch_size)):
        b = make_batch(data, idx, pad_id).to(device)
        with autocast(device, precision):
            out[idx] = model.embed(task, b.ids, b.mask, b.types).float()
    return out
