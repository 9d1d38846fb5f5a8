from typing import Annotated

from minbert.config import ge
from minbert.lr_schedules.base import Updater


class WarmupLinear(Updater):
    """Linear warm-up from 0 to the configured rate over `warmup` steps (a fraction of all steps when < 1), then
    linear decay to 0 at the last step (BERT's fine-tuning schedule)."""

    def __init__(self, warmup: Annotated[float, ge(0, "a fraction of all steps when < 1, else steps")] = 0.1):
        self.warmup = warmup
        self.base: list[float] | None = None

    def on_step(self, optimizer, step: int, total_steps: int) -> None:
        if self.base is None:
            self.base = [g["lr"] for g in optimizer.param_groups]
        warm = self.warmup * total_steps if self.warmup < 1 else self.warmup
        if warm and step < warm:
            scale = (step + 1) / warm
        else:
            scale = max(0.0, (total_steps - step) / max(1.0, total_steps - warm))
        for g, base in zip(optimizer.param_groups, self.base):
            g["lr"] = base * scale

    def state_dict(self) -> dict:
        return {"base": self.base}

    def load_state_dict(self, state: dict) -> None:
        self.base = state.get("base")
