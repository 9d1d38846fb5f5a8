"""What a task is: its data set, whether it reads sentence pairs, its metric, its default head and loss, and how
head outputs become the predictions written to CS224N files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from minbert.data import DatasetSpec


@dataclass(frozen=True)
class Task:
    name: str
    dataset: DatasetSpec
    pair: bool
    metric_name: str  # "acc" or "pearson"
    default_head: str
    default_loss: str
    label_max: float  # top of the label range: cosine heads scale to it, cosine losses divide by it
    predict: Callable[[dict, float], torch.Tensor]  # (head output, decision threshold) -> predictions
    file_prefix: str = ""  # CS224N prediction file names: {prefix}-{split}-output.csv; "" = the task name

    @property
    def prefix(self) -> str:
        return self.file_prefix or self.name

    def metric(self, preds: torch.Tensor, labels: torch.Tensor) -> float:
        if self.metric_name == "acc":
            return (preds.long() == labels.long()).float().mean().item()
        return pearson(preds.double().numpy(), labels.double().numpy())

    def normalized(self, value: float) -> float:
        """On 0..1, for the overall score: accuracy as is, Pearson r as (r + 1) / 2."""
        return (value + 1) / 2 if self.metric_name == "pearson" else value


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.std() == 0 or y.std() == 0:
        return 0.0  # a constant prediction has no correlation; corrcoef would return nan
    return float(np.corrcoef(x, y)[0, 1])


def argmax_classes(out: dict, threshold: float) -> torch.Tensor:
    return out["logits"].argmax(-1)


def binary(out: dict, threshold: float) -> torch.Tensor:
    """Two logits: argmax; one score: above the head's decision threshold (0 for a logit, scale/2 for a cosine)."""
    if "logits" in out:
        return out["logits"].argmax(-1)
    return (out["score"] > threshold).long()


def regression(out: dict, threshold: float) -> torch.Tensor:
    return out["score"].float()


def overall_score(metrics: dict[str, float], tasks: dict[str, Task]) -> float:
    """Mean of the tasks' normalized metrics; with SST, Quora and STS it is the reports'
    (sst_acc + quora_acc + (sts_r + 1) / 2) / 3."""
    values = [t.normalized(metrics[f"{n}/{t.metric_name}"]) for n, t in tasks.items()]
    return sum(values) / len(values)
