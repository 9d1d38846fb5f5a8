"""What every learning-rate schedule is: hooks before each step and after each epoch's evaluation, and its state
for resume; each defaults to doing nothing, so a schedule writes only the hooks it uses."""

from __future__ import annotations


class LrSchedule:
    def on_step(self, optimizer, step: int, total_steps: int) -> None:
        pass

    def on_epoch_end(self, optimizer, epoch: int, train_loss: float, dev: dict) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
