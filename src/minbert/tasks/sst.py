from minbert.data import DATASETS
from minbert.tasks.base import Task

TASK = Task(
    "sst", DATASETS["sst"], pair=False, metric_name="acc", default_head="linear", default_loss="ce", label_max=4.0
)
