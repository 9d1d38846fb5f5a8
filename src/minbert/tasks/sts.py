from minbert.data import DATASETS
from minbert.tasks.base import Task

# Similarity 0..5, scored by Pearson r; the cosine head with MSE is the reports' strongest STS setup (002, 003).
TASK = Task(
    "sts", DATASETS["sts"], pair=True, metric_name="pearson", default_head="cosine", default_loss="mse", label_max=5.0
)
