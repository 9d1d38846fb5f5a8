from minbert.lr_schedules.base import LrSchedule


class Constant(LrSchedule):
    """The learning rate stays where the config puts it (the CS224N handout's setting)."""
