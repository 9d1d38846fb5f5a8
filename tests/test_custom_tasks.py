"""Your own tasks from the config alone: files in CSV, TSV or JSON lines, a label type and a metric, trained,
evaluated and predicted like the built-in ones."""

import json

import numpy as np
import pytest
import yaml

import minbert
from minbert.data import DATASETS, data_dir, load_split
from minbert.data.readers import LabelSpec, named_label, read_table
from minbert.errors import MinbertError
from minbert.tasks.base import f1, spearman
from tests.helpers import run_cli


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_f1_matches_sklearn_binary_and_macro():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    p, y = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    assert f1(p.astype(float), y.astype(float)) == pytest.approx(f1_score(y, p))
    p, y = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert f1(p.astype(float), y.astype(float)) == pytest.approx(f1_score(y, p, average="macro"))


def test_read_table_names_file_and_line(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "fine", "label": "happy"}\n\n{"text": "bad", "label": "meh"}\n')
    label = LabelSpec("label", named_label(("sad", "happy")), 0, 1)
    with pytest.raises(MinbertError, match=r"a.jsonl:3: label 'meh' in 'label': 'meh' is not one of the labels"):
        read_table(f, "auto", ("text",), label, "")
    f = tmp_path / "b.csv"
    f.write_text("s1,s2,score\nx,y,1.5\n,z,2\n")
    rows = read_table(f, "auto", ("s1", "s2"), LabelSpec("score", float, 0, 5), "")
    assert [(e.id, e.texts, e.label) for e in rows] == [("0", ("x", "y"), 1.5)]  # the empty row is skipped
    with pytest.raises(MinbertError, match="b.csv: no column 'sentence'"):
        read_table(f, "csv", ("sentence",), None, "")


@pytest.mark.slow
def test_a_custom_jsonl_task_trains_from_a_config_alone(tmp_path):
    """A sentence task with named classes scored by F1 (JSON lines) beside a pair regression scored by Spearman
    (CSV), made from the CS224N files: trained, evaluated, predicted to files and through minbert.load."""
    sst = load_split(DATASETS["sst"], "dev", data_dir())[:160]
    kept = [e for e in sst if e.label != 2]
    for split, rows in (("train", kept[:96]), ("dev", kept[96:])):
        with open(tmp_path / f"mood-{split}.jsonl", "w") as f:
            for e in rows:
                f.write(
                    json.dumps({"uid": f"m{e.id}", "review": e.texts[0], "mood": "happy" if e.label > 2 else "sad"})
                )
                f.write("\n")
    sts = load_split(DATASETS["sts"], "dev", data_dir())[:120]
    for split, rows in (("train", sts[:80]), ("dev", sts[80:])):
        lines = ["a,b,score"] + [
            ",".join(['"%s"' % t.replace('"', "'") for t in e.texts] + [str(e.label)]) for e in rows
        ]
        (tmp_path / f"sim-{split}.csv").write_text("\n".join(lines) + "\n")
    config = {
        "data_dir": str(tmp_path),
        "custom_tasks": {
            "mood": {
                "files": {"train": "mood-train.jsonl", "dev": "mood-dev.jsonl"},
                "text": ["review"],
                "label": "mood",
                "id": "uid",
                "labels": ["sad", "happy"],
                "metric": "f1",
            },
            "sim": {
                "files": {"train": "sim-train.csv", "dev": "sim-dev.csv"},
                "text": ["a", "b"],
                "label": "score",
                "type": "regression",
                "label_range": [0, 5],
                "metric": "spearman",
            },
        },
        "tasks": {"mood": {"batch_size": 8, "max_length": 32}, "sim": {"batch_size": 8, "max_length": 32}},
        "epochs": 1,
        "steps_per_epoch": 6,
        "precision": "fp32",
        "head_lr_mult": 10,
    }
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    out = run_cli(str(tmp_path / "mine.yaml"), f"out={run}")
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["dev"]["mood/f1"] <= 1 and -1 <= summary["dev"]["sim/spearman"] <= 1, out
    written = (run / "predictions" / "mood-dev-output.csv").read_text().splitlines()
    assert written[0].split() == ["id", "Predicted_mood"] and written[1].split(" , ")[0] == f"m{kept[96].id}"
    assert written[1].split(" , ")[1].strip() in ("sad", "happy")
    m = minbert.load(run)
    got = m.predict("mood", ["a gorgeous, witty film"])[0]
    assert got["name"] in ("sad", "happy") and len(got["probabilities"]) == 2
    assert 0 <= m.predict("sim", [("a man plays guitar", "a person plays a guitar")])[0]["score"] <= 5


def test_a_config_s_custom_tasks_stay_in_its_own_task_table(tmp_path):
    """Validating a config changes nothing global: two configs that define a task of the same name differently
    each see their own, and the built-in table is as it was."""
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig
    from minbert.tasks import TASKS

    before = dict(TASKS)

    def config(labels):
        task = {"files": {"train": "a.csv", "dev": "b.csv"}, "text": ["t"], "label": "y", "labels": labels}
        return load_config(TrainConfig, None, [f"custom_tasks={{mine: {json.dumps(task)}}}", "tasks={mine: {}}"])

    two, three = config(["a", "b"]).validate(), config(["a", "b", "c"]).validate()
    assert TASKS == before and "mine" not in TASKS
    assert two.specs["mine"].dataset.label_names == ("a", "b")
    assert three.specs["mine"].dataset.label_names == ("a", "b", "c")
    assert two.specs["sst"] is TASKS["sst"]
