"""docs/ARCHITECTURE.md's worked examples stay true: its new loss and new task, each registered with one line,
pass the config checks and work."""

import re
from pathlib import Path

import torch

from minbert.config import load_config
from minbert.losses import LOSSES
from minbert.model.outputs import HeadOutput
from minbert.multitask.config import TrainConfig
from minbert.tasks import TASKS

DOC = Path(__file__).parents[1] / "docs" / "ARCHITECTURE.md"
QUICKSTART = Path(__file__).parents[1] / "configs" / "quickstart.yaml"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_new_loss_and_task_of_the_architecture_doc(monkeypatch):
    loss_code, task_code = blocks()
    loss_ns, task_ns = {}, {}
    exec(loss_code, loss_ns)
    exec(task_code, task_ns)
    monkeypatch.setitem(LOSSES, "huber", loss_ns["Huber"])  # the one registry line each
    monkeypatch.setitem(TASKS, "sick", task_ns["TASK"])
    cfg = load_config(TrainConfig, QUICKSTART, ["tasks.sts.loss=huber", "tasks.sts.loss_args.delta=0.5"]).validate()
    loss = LOSSES[cfg.task("sts").loss](**cfg.task("sts").loss_args)
    assert loss.delta == 0.5
    score, labels = torch.tensor([1.0, 4.0]), torch.tensor([1.2, 2.0])
    assert torch.isclose(
        loss(HeadOutput(score=score), labels), torch.nn.functional.huber_loss(score, labels, delta=0.5)
    )
    cfg = load_config(TrainConfig, QUICKSTART, ["tasks.sick.head=cosine"]).validate()
    assert "sick" in cfg.tasks and TASKS["sick"].pair
