from typing import Annotated

from minbert.config import ge, within
from minbert.lr_schedules.base import Updater


class Plateau(Updater):
    """Report 001's schedule: multiply the learning rate by `factor` (0.5) after `patience` (3) consecutive epochs
    whose total training loss increased; the count starts again after each cut."""

    def __init__(self, factor: Annotated[float, within(0, 1, "(]")] = 0.5, patience: Annotated[int, ge(1)] = 3):
        self.factor, self.patience = factor, patience
        self.previous: float | None = None
        self.streak = 0

    def on_epoch_end(self, optimizer, epoch: int, train_loss: float, dev: dict) -> dict:
        rose = self.previous is not None and train_loss > self.previous
        self.streak = self.streak + 1 if rose else 0
        self.previous = train_loss
        if self.streak >= self.patience:
            for g in optimizer.param_groups:
                g["lr"] *= self.factor
            self.streak = 0
        return {}

    def state_dict(self) -> dict:
        return {"previous": self.previous, "streak": self.streak}

    def load_state_dict(self, state: dict) -> None:
        self.previous, self.streak = state.get("previous"), state.get("streak", 0)
