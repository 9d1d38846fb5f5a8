from minbert.data import DATASETS
from minbert.tasks.base import Task

# Paraphrase detection: one logit per pair and BCE by default (report 002's baseline).
TASK = Task(
    "quora",
    DATASETS["quora"],
    pair=True,
    metric_name="acc",
    default_head="concat",
    default_loss="bce",
    label_max=1.0,
    file_prefix="para",
)
