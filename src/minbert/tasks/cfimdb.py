from minbert.data import DATASETS
from minbert.tasks.base import Task

TASK = Task(
    "cfimdb", DATASETS["cfimdb"], pair=False, metric_name="acc", default_head="linear", default_loss="ce", label_max=1.0
)
