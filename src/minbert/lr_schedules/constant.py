class Constant:
    """The learning rate stays where the config puts it (the CS224N handout's setting)."""

    def on_step(self, optimizer, step: int, total_steps: int) -> None:
        pass

    def on_epoch_end(self, optimizer, epoch: int, train_loss: float, dev: dict) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
