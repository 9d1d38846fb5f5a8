"""Property-based tests (Hypothesis) of the plans the newer features make: LoRA (on or off, which tasks, shared
weights training or not), PALs, combiners and conflict statistics, task schedules, heads with and without weights,
distillation from a finished run and tasks added to one (from_run). Each generated plan is refused in one line
before a run folder exists, or trains to its end: nothing that from_run keeps moves, and only tasks that train are
logged as trained.

CI runs a few derandomized examples; `MINBERT_FUZZ=long` runs a hundred times as many (docs/TRAINING.md records a
long run and what it found):

    MINBERT_FUZZ=long python -m pytest tests/test_fuzz_plans.py -q -p no:cacheprovider
"""

import json

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from minbert.errors import MinbertError
from tests.helpers import QUICKSTART, TINY, run_cli
from tests.test_fuzz import examples, rarely


@pytest.fixture(scope="module")
def base_run(tiny_encoder, tmp_path_factory):
    """A finished SST-only run on the tiny encoder: the run from_run adds to and distill.teachers names."""
    run = tmp_path_factory.mktemp("base") / "run"
    run_cli(str(QUICKSTART), *TINY, f"checkpoint={tiny_encoder}", "tasks={sst: {batch_size: 8, train_limit: 64}}",
            "epochs=1", f"out={run}")  # fmt: skip
    return run


@st.composite
def plans(draw):
    words = []
    lora = draw(st.booleans())
    if lora:
        words.append("lora.enabled=true")
    if draw(st.booleans()):  # some LoRA settings, on or off (off: they have no effect)
        words.append(f"lora.tasks=[{','.join(draw(st.lists(st.sampled_from(['sst', 'quora', 'sts']), unique=True)))}]")
    if draw(rarely(3)):
        words.append("lora.train_shared=true")
    if draw(rarely(4)):
        words.append("pals.enabled=true")
    words.append(f"combiner={draw(st.sampled_from(['sum', 'sum', 'pcgrad', 'gradvac']))}")
    if draw(rarely(4)):
        words.append("conflict_stats=true")
    words.append(f"schedule={draw(st.sampled_from(['round_robin', 'sequential', 'annealed', 'proportional']))}")
    words.append(f"tasks.sts.head={draw(st.sampled_from(['cosine', 'concat', 'cross']))}")
    if draw(rarely(3)):
        words.append("tasks.sts.extra_layers=1")
    add = draw(rarely(3))
    if add:  # add tasks to the base run
        words.append("from_run=BASE")
        words.append(f"tasks={{{draw(st.sampled_from(['sts', 'quora', 'quora, sts']))}}}")
    if draw(rarely(4)):
        words.append("distill.teachers=[BASE]")
    if draw(rarely(8)):
        words.append("frozen=true")
    return words


@settings(max_examples=examples(6, most=300))
@given(plans())
def test_a_generated_plan_is_refused_in_one_line_or_trains_what_it_says(base_run, tiny_encoder, tmp_path_factory,
                                                                        words):  # fmt: skip
    from safetensors.torch import load_file

    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig
    from minbert.multitask.state import snapshot_folder
    from minbert.multitask.train import train

    out = tmp_path_factory.mktemp("plan") / "run"
    words = [w.replace("BASE", str(base_run)) for w in words]
    if any(w.startswith("tasks={") for w in words):  # the added tasks' settings, with the tiny budget's
        names = words[[w.startswith("tasks={") for w in words].index(True)][7:-1].split(", ")
        words = [w for w in words if not w.startswith(("tasks=", "tasks.sts.")) or "sts" in names]
        words.insert(0, "tasks={" + ", ".join(f"{n}: {{}}" for n in names) + "}")
    tiny = [*TINY, f"checkpoint={tiny_encoder}", "epochs=1", "steps_per_epoch=3"]
    try:
        cfg = load_config(TrainConfig, QUICKSTART, [*tiny, *words, f"out={out}"])
        train(cfg)
    except MinbertError as e:
        assert "\n" not in str(e).strip() and str(e)
        assert not out.exists(), "refused after the run folder was made"
        event("refused")
        return
    event("trained")
    saved = load_config(TrainConfig, out / "config.yaml")
    before = load_file(str(snapshot_folder(base_run, "best") / "model.safetensors")) if saved.keep_tasks else {}
    after = load_file(str(snapshot_folder(out, "best") / "model.safetensors"))
    for k, v in before.items():  # what from_run keeps stays as it was
        assert torch.equal(v, after[k]), k
    trained = [t for t in saved.tasks if t not in saved.keep_tasks]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    seen = {k.split("/")[-1] for r in records for k in r if k.startswith("train/loss/")}
    assert seen <= set(trained)  # a task is only reported as trained when it trains
