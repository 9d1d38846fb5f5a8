class Sum:
    """The gradient of the summed loss: what plain multitask training does."""

    def __call__(self, grads, rng):
        return grads.sum(0)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
