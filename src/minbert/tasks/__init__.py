"""Tasks by name; a new task is one file plus one line here."""

from minbert.tasks import cfimdb, quora, sst, sts
from minbert.tasks.base import Task, overall_score, pearson

TASKS: dict[str, Task] = {t.name: t for t in (sst.TASK, quora.TASK, sts.TASK, cfimdb.TASK)}
BUILTIN = frozenset(TASKS)  # a config's custom_tasks join TASKS when it is validated (tasks/custom.py)

__all__ = ["BUILTIN", "TASKS", "Task", "overall_score", "pearson"]
