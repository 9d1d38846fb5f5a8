"""Evaluation: predictions for every example of a split, metrics against labels, CS224N prediction files."""

from __future__ import annotations

from pathlib import Path

import torch

from minbert.data import bucket_batches, embed_all, write_predictions
from minbert.data.batching import trimming
from minbert.distributed import gathered_rows
from minbert.multitask.data import TaskData, make_batch
from minbert.multitask.model import MultitaskModel
from minbert.runs import autocast
from minbert.tasks import TASKS, overall_score


def predict_task(
    model: MultitaskModel, task: str, data: TaskData, pad_id: int, device, precision: str, batch_size: int = 64
) -> torch.Tensor:
    """Predictions in example order (classes, 0/1, or similarities)."""
    return TASKS[task].hard(soft_task(model, task, data, pad_id, device, precision, batch_size))


@torch.inference_mode()
def soft_task(
    model: MultitaskModel, task: str, data: TaskData, pad_id: int, device, precision: str, batch_size: int = 64
) -> torch.Tensor:
    """Soft scores in example order (Task.soft). Bi-encoder and sentence tasks encode each distinct sentence once."""
    model.eval()
    spec, scale = TASKS[task], model.cosine_scale(task)
    if data.joint is not None:  # cross-encoder: every pair is its own encoder input

        def scores(pairs: list[int]) -> torch.Tensor:
            out = torch.empty(len(pairs))
            lengths = [data.lengths[i] for i in pairs]
            for idx in trimming(bucket_batches(lengths, batch_size)):
                with autocast(device, precision):
                    out[idx] = (
                        spec.soft(model(task, make_batch(data, [pairs[i] for i in idx], pad_id).to(device)), scale)
                        .float()
                        .cpu()
                    )
            return out

        return gathered_rows(scores, len(data))  # with several processes each scores its share
    emb = data.features  # (S, H) a frozen encoder's, computed once
    if emb is None:
        emb = encode_sentences(model, task, data.sentences, pad_id, device, precision, batch_size)  # (S, H)
    index = torch.tensor(data.index, device=device)  # (N, 1 or 2)
    parts = []
    for rows in index.split(batch_size * 4):
        e = emb[rows.T.reshape(-1)]  # (k * b, H): all first sentences, then the second ones
        with autocast(device, precision):
            parts.append(spec.soft(model.head(task, e, pair=rows.shape[1] == 2), scale).cpu())
    return torch.cat(parts)


def encode_sentences(
    model: MultitaskModel, task: str, sentences, pad_id, device, precision, batch_size
) -> torch.Tensor:
    """(S, H) embeddings of distinct sentences with the task's pooling (and PALs)."""
    embed = lambda ids, mask: model.embed(task, ids, mask)  # noqa: E731
    width = model.bert.config.hidden_size
    # with several processes each encodes its share of the sentences and all get every embedding back
    return gathered_rows(
        lambda idx: embed_all(embed, [sentences[i] for i in idx], pad_id, width, device, precision, batch_size),
        len(sentences),
    )


def evaluate(
    model, data: dict[str, TaskData], pad_id, device, precision
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Metrics {"sst/acc": .., "quora/acc": .., "sts/pearson": .., "overall": ..} and the predictions."""
    metrics, preds = {}, {}
    for task, d in data.items():
        preds[task] = predict_task(model, task, d, pad_id, device, precision)
        if d.labels is not None:
            metrics[f"{task}/{TASKS[task].metric_name}"] = TASKS[task].metric(preds[task], d.labels)
    if data and len(metrics) == len(data):
        metrics["overall"] = overall_score(metrics, {t: TASKS[t] for t in data})
    return metrics, preds


def write_task_predictions(
    folder: Path,
    split: str,
    data: dict[str, TaskData],
    preds: dict[str, torch.Tensor],
    names: str = "{prefix}-{split}-output.csv",
) -> list[Path]:
    """CS224N prediction files; `names` (TrainConfig.prediction_files) from the task's file prefix, name and split."""
    paths = []
    for task, p in preds.items():
        spec = TASKS[task]
        if spec.regression:
            values = [f"{x:.4f}" for x in p.tolist()]
        elif spec.dataset.written_names:
            values = [spec.dataset.written_names[int(x)] for x in p.tolist()]
        else:
            values = [int(x) for x in p.tolist()]
        path = folder / names.format(prefix=spec.prefix, task=task, split=split)
        write_predictions(path, spec.dataset.prediction_header, [e.id for e in data[task].examples], values)
        paths.append(path)
    return paths


def results_table(rows: dict[str, dict[str, float]], tasks) -> str:
    """Markdown table, one row per split/run: each task's metric and the overall score."""
    cols = [f"{t}/{TASKS[t].metric_name}" for t in tasks] + ["overall"]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" if c in m else "-" for c in cols) + " |")
    return "\n".join(lines)
