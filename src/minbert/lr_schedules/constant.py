from minbert.lr_schedules.base import Updater


class Constant(Updater):
    """The learning rate stays where the config puts it (the CS224N handout's setting)."""
