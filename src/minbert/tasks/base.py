"""What a task is: its data set, whether it reads sentence pairs, its metric, its default head and loss, and how
head outputs become the predictions written to CS224N files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from minbert.data import DatasetSpec
from minbert.model.outputs import HeadOutput


@dataclass(frozen=True)
class Task:
    name: str
    dataset: DatasetSpec
    pair: bool
    metric_name: str  # a key of METRICS: "acc", "f1", "pearson" or "spearman"
    default_head: str
    default_loss: str
    label_max: float  # top of the label range: cosine heads scale to it, cosine losses divide by it
    file_prefix: str = ""  # CS224N prediction file names: {prefix}-{split}-output.csv; "" = the task name

    @property
    def regression(self) -> bool:
        """Scored on a real value (Pearson, Spearman) rather than classes."""
        return self.dataset.num_labels == 0

    @property
    def prefix(self) -> str:
        return self.file_prefix or self.name

    def soft(self, out: HeadOutput, cosine_scale: float | None) -> torch.Tensor:
        """Head output -> what ensembles average: class probabilities (N, C), the probability of "yes" (N,) for
        a one-score binary head (sigmoid of a logit, or a cosine score / its scale), or the similarity (N,)."""
        if out.logits is not None:
            return out.logits.float().softmax(-1)
        score = out.score.float()
        if self.regression:
            return score
        return score / cosine_scale if cosine_scale else torch.sigmoid(score)

    def hard(self, soft: torch.Tensor) -> torch.Tensor:
        """Soft scores -> the predictions written to files: a class, 0/1, or the similarity itself."""
        if soft.dim() == 2:
            return soft.argmax(-1)
        return soft if self.regression else (soft > 0.5).long()

    def metric(self, preds: torch.Tensor, labels: torch.Tensor) -> float:
        return METRICS[self.metric_name](preds.double().numpy(), labels.double().numpy())

    def normalized(self, value: float) -> float:
        """On 0..1, for the overall score: accuracy and F1 as they are, correlations r as (r + 1) / 2."""
        return (value + 1) / 2 if self.metric_name in ("pearson", "spearman") else value


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.std() == 0 or y.std() == 0:
        return 0.0  # a constant prediction has no correlation; corrcoef would return nan
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of the ranks, ties sharing their mean rank (scipy.stats.spearmanr)."""
    return pearson(_ranks(x), _ranks(y))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    return np.bincount(inverse, ranks)[inverse] / np.bincount(inverse)[inverse]  # each tie group's mean rank


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds.round() == labels.round()).mean())


def f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """Two classes: F1 of class 1; more: the unweighted mean of every class's F1 (macro; sklearn's f1_score)."""
    preds, labels = preds.round().astype(int), labels.round().astype(int)
    classes = [1] if set(np.unique(labels)) | set(np.unique(preds)) <= {0, 1} else np.union1d(labels, preds)
    scores = []
    for c in classes:
        tp = float(((preds == c) & (labels == c)).sum())
        predicted, actual = float((preds == c).sum()), float((labels == c).sum())
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return float(np.mean(scores))


# Task metrics by the name a task (or a custom task's `metric:`) gives; (predictions, labels) -> value.
METRICS = {"acc": accuracy, "f1": f1, "pearson": pearson, "spearman": spearman}


def overall_score(metrics: dict[str, float], tasks: dict[str, Task]) -> float:
    """Mean of the tasks' normalized metrics; with SST, Quora and STS it is the reports'
    (sst_acc + quora_acc + (sts_r + 1) / 2) / 3."""
    values = [t.normalized(metrics[f"{n}/{t.metric_name}"]) for n, t in tasks.items()]
    return sum(values) / len(values)
