"""Tasks by name; a new task is one file plus one line here."""

from minbert.tasks import cfimdb, quora, sst, sts
from minbert.tasks.base import Task, overall_score, pearson

# the built-in tasks; a config's own table adds its custom_tasks (TrainConfig.specs, tasks/custom.py)
TASKS: dict[str, Task] = {t.name: t for t in (sst.TASK, quora.TASK, sts.TASK, cfimdb.TASK)}

__all__ = ["TASKS", "Task", "overall_score", "pearson"]
