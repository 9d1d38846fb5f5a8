"""What every updater is: something that moves a training setting as training goes, the learning rate (a schedule)
or a loss's margin (the dynamic margin). Its hooks run before each optimizer step and after each epoch's evaluation;
each does nothing by default, as does its state (`registry.Extension`), so an updater writes only what it uses."""

from __future__ import annotations

from minbert.registry import Extension


class Updater(Extension):
    # False: one per run, the config's `lr_schedule`; True: one per task, bound to that task's loss when built
    # (the dynamic margin, switched on by `tasks.<task>.margin_step`)
    per_task: bool = False

    def on_step(self, optimizer, step: int, total_steps: int) -> None:
        pass

    def on_epoch_end(self, optimizer, epoch: int, train_loss: float, dev: dict[str, float]) -> dict:
        """After the epoch's evaluation (`dev`: its metrics); returns what to log."""
        return {}
