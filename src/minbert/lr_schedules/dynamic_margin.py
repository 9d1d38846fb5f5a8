"""Report 004's dynamic margin (Algorithm 1) for the cosine-embedding loss: after each epoch, compare the task's dev
metric with the previous epoch's (0 before the first) and move the margin by step / epoch (the 1 / epoch factor
decays the step like a learning rate). Which way it moves was itself one of the report's tested factors (section
5.3: "whether the model got more sensitive (reduced margin) or less sensitive (increased margin) when performance
decreased after one epoch"), so both are here:

- `direction="algorithm1"`, Algorithm 1 as printed: improved -> lower the margin (the model grows more sensitive:
  more dissimilar pairs are penalized), otherwise raise it (more forgiving).
- `direction="reverse"`, the opposite: improved -> raise the margin, otherwise lower it (more sensitive when the dev
  metric did not improve).

Algorithm 1 of report 004 ("Dynamic Margin Adjustment for Cosine-Similarity Embedding Loss"), verbatim:

    Initialize:
    previousMetric, currentMetric = 0
    currentMargin = [0, 0.25, 0.5]
    marginStep = [0.05, 0.1, 0.2]
    for each epoch do
    currentMetric <- EvaluateModel(devSet)
    improvement <- currentMetric - previousMetric
    if improvement > 0 then
    currentMargin <- currentMargin - 1/epoch# * marginStep
    else
    currentMargin <- currentMargin + 1/epoch# * marginStep
    end if
    previousMetric <- currentMetric
    UpdateLossFunctionMargin(currentMargin)
    end for

An improvement is strictly greater than the previous value: an equal dev metric counts as not improved."""

from __future__ import annotations

from typing import Annotated, Literal

from minbert.config import gt
from minbert.losses.cosine_embedding import CosineEmbedding
from minbert.lr_schedules.base import Updater

Direction = Literal["algorithm1", "reverse"]
DIRECTIONS: tuple[str, ...] = ("algorithm1", "reverse")


def next_margin(
    margin: float, previous: float, current: float, epoch: int, step: float, direction: Direction = "algorithm1"
) -> float:
    """The margin after an epoch whose dev metric is `current` (the previous epoch's `previous`)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: valid: {', '.join(DIRECTIONS)}")
    lower = (current - previous > 0) == (direction == "algorithm1")
    return margin - step / epoch if lower else margin + step / epoch


class DynamicMargin(Updater):
    """Moves `loss.margin` by Algorithm 1 (or its reverse, `direction`) from the dev value of `metric`
    ("sts/pearson", ...); `task` names it in the log."""

    per_task = True

    def __init__(
        self,
        loss: CosineEmbedding,
        task: str,
        metric: str,
        /,
        step: Annotated[float, gt(0)],
        direction: Direction = "algorithm1",
    ):
        self.loss, self.task, self.metric, self.step, self.direction = loss, task, metric, step, direction
        self.previous = 0.0

    def on_epoch_end(self, optimizer, epoch: int, train_loss: float, dev: dict[str, float]) -> dict:
        current = dev[self.metric]
        self.loss.margin = next_margin(self.loss.margin, self.previous, current, epoch, self.step, self.direction)
        self.previous = current
        return {f"margin/{self.task}": self.loss.margin}

    def state_dict(self) -> dict:
        return {"margin": self.loss.margin, "previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.loss.margin, self.previous = state["margin"], state["previous"]
