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


def _imports() -> dict[str, set[str]]:
    """{module: the minbert modules it imports}, every import counted: module level, inside functions and under
    TYPE_CHECKING. `from minbert.a import b` names module minbert.a.b when that is a module, else minbert.a."""
    import ast

    src = Path(__file__).parents[1] / "src"
    mods = {}
    for p in src.rglob("*.py"):
        parts = list(p.relative_to(src).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def resolve(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names
                ]
            else:
                continue
            graph[m] |= {resolve(n) for n in names if n.startswith("minbert")} - {m}
    return graph


def test_no_import_cycle_in_the_package():
    graph = _imports()
    assert "minbert.multitask.stepper" in graph and "minbert.multitask.objective" in graph["minbert.multitask.stepper"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path[path.index(n) :] + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
