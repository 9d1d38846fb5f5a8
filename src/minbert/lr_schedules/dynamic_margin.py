"""Report 004's dynamic margin (Algorithm 1) for the cosine-embedding loss: after each epoch, compare the task's dev
metric with the previous epoch's (0 before the first); if it improved, lower the margin by step / epoch (the model
grows more sensitive), otherwise raise it by step / epoch. The 1 / epoch factor decays the step like a learning
rate."""

from __future__ import annotations

from typing import Annotated

from minbert.config import gt
from minbert.losses.cosine_embedding import CosineEmbedding
from minbert.lr_schedules.base import Updater


def next_margin(margin: float, previous: float, current: float, epoch: int, step: float) -> float:
    return margin - step / epoch if current - previous > 0 else margin + step / epoch


class DynamicMargin(Updater):
    """Moves `loss.margin` by Algorithm 1 from the dev value of `metric` ("sts/pearson", ...); `task` names it in
    the log."""

    per_task = True

    def __init__(self, loss: CosineEmbedding, task: str, metric: str, /, step: Annotated[float, gt(0)]):
        self.loss, self.task, self.metric, self.step = loss, task, metric, step
        self.previous = 0.0

    def on_epoch_end(self, optimizer, epoch: int, train_loss: float, dev: dict[str, float]) -> dict:
        current = dev[self.metric]
        self.loss.margin = next_margin(self.loss.margin, self.previous, current, epoch, self.step)
        self.previous = current
        return {f"margin/{self.task}": self.loss.margin}

    def state_dict(self) -> dict:
        return {"margin": self.loss.margin, "previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.loss.margin, self.previous = state["margin"], state["previous"]
