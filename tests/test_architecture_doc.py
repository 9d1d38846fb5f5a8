"""docs/ARCHITECTURE.md's "Adding things" stays true: its one template adds a member to every extension family of
its table, registered with one line and built from a config by the training code; its worked loss and task pass the
config checks and work. And the package has no import cycle."""

import importlib
import re
from pathlib import Path

import pytest
import torch

from minbert.config import load_config
from minbert.errors import MinbertError
from minbert.losses import LOSSES
from minbert.model import BertModel
from minbert.model.multitask import MultitaskModel
from minbert.model.outputs import HeadOutput
from minbert.multitask.config import TrainConfig
from minbert.multitask.techniques import Techniques
from minbert.tasks import TASKS
from tests.helpers import QUICKSTART, TINY_BERT

DOC = Path(__file__).parents[1] / "docs" / "ARCHITECTURE.md"


def adding_things() -> str:
    text = DOC.read_text()
    start = text.index("## Adding things\n")
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


def block(containing: str) -> str:
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", adding_things(), re.S) if containing in b]
    return code


def families() -> list[dict[str, str]]:
    """The rows of the section's family table, each {column: cell}."""
    rows = [line.strip().strip("|").split("|") for line in adding_things().splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0]]
    return [dict(zip(header, (c.strip().strip("`") for c in row))) for row in rows[2:]]


# where the training code keeps the member it built from the config, by registry
BUILT = {
    "SAMPLERS": lambda tech: tech.sampler,
    "COMBINERS": lambda tech: tech.stepper.combiner,
    "WEIGHTINGS": lambda tech: tech.objective.weighting,
    "REGULARIZERS": lambda tech: tech.objective.regularizers["my_member"],
    "UPDATERS": lambda tech: tech.lr_schedule,
    "LOSSES": lambda tech: tech.objective.losses["sts"],
}


def test_the_table_names_every_family():
    assert sorted(row["REGISTRY"] for row in families()) == sorted(BUILT)


@pytest.mark.parametrize("row", families(), ids=lambda row: row["family"])
def test_the_template_adds_a_member_to_the_family(row, monkeypatch):
    code = block("FOLDER").replace("FOLDER", row["FOLDER"]).replace("Base", row["Base"])
    ns = {}
    exec(code, ns)
    registry = getattr(importlib.import_module(f"minbert.{row['FOLDER']}"), row["REGISTRY"])
    monkeypatch.setitem(registry, "my_member", ns["MyMember"])  # the one registry line
    overrides = row["in a config"].replace("NAME", "my_member").replace("TASK", "sts").replace("S=V", "strength=0.5")
    cfg = load_config(TrainConfig, QUICKSTART, overrides.split()).validate()
    model = MultitaskModel(BertModel(TINY_BERT), {n: cfg.task(n) for n in cfg.tasks}, cfg.pals)
    built = BUILT[row["REGISTRY"]](Techniques(cfg, model, torch.device("cpu")))
    assert type(built) is ns["MyMember"] and built.strength == 0.5
    # the setting's declared range, checked before any work under its own config key
    (setting,) = [o.partition("=")[0] for o in overrides.split() if o.endswith("=0.5")]
    with pytest.raises(MinbertError, match=re.escape(f"{setting}: -1.0 must be >= 0")):
        load_config(TrainConfig, QUICKSTART, overrides.replace("=0.5", "=-1").split()).validate()


def test_the_new_loss_and_task_of_the_architecture_doc(monkeypatch):
    loss_ns, task_ns = {}, {}
    exec(block("class Huber"), loss_ns)
    exec(block("TASK = Task("), task_ns)
    monkeypatch.setitem(LOSSES, "huber", loss_ns["Huber"])  # the one registry line each
    monkeypatch.setitem(TASKS, "sick", task_ns["TASK"])
    cfg = load_config(TrainConfig, QUICKSTART, ["tasks.sts.loss=huber", "tasks.sts.loss_args.delta=0.5"]).validate()
    model = MultitaskModel(BertModel(TINY_BERT), {n: cfg.task(n) for n in cfg.tasks}, cfg.pals)
    loss = Techniques(cfg, model, torch.device("cpu")).objective.losses["sts"]
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
