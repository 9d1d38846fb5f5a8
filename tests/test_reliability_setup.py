"""Issue 41's classes of bad input around a run's plan (multitask/checks.py, multitask/distill.py): a step, task or
run with nothing to train; settings without effect; caches trusted on resume; errors through a key that points at
another run. Each refusal is one `minbert: error:` line naming the settings and the fix, before a run folder exists."""

import shutil

import pytest
import torch

from minbert.cli import main
from minbert.runs import save_tensors
from tests.helpers import QUICKSTART, TINY, run_cli
from tests.test_user_errors import error_line


def fails(argv, capsys, *parts) -> str:
    assert main([str(a) for a in argv]) == 2, argv
    line = error_line(capsys.readouterr().err)
    for p in parts:
        assert p in line, (p, line)
    return line


@pytest.fixture(scope="module")
def sst_run(tiny_encoder, tmp_path_factory):
    """A finished SST-only run on the tiny encoder: what from_run and distill.teachers point at."""
    run = tmp_path_factory.mktemp("sst-only") / "run"
    tiny = [*TINY, f"checkpoint={tiny_encoder}", "tasks={sst: {batch_size: 8, train_limit: 96, eval_limit: 48}}"]
    run_cli(str(QUICKSTART), *tiny, f"out={run}")
    return run


def tiny(tiny_encoder, tmp_path) -> list:
    return ["train", QUICKSTART, *TINY, f"checkpoint={tiny_encoder}", f"out={tmp_path / 'run'}"]


# 1. nothing to train: checked before the first step, before the run folder is made


@pytest.mark.parametrize(
    "settings, parts",
    [
        (["combiner=pcgrad"], ["combiner=pcgrad:", "no shared weight trains", "lora.train_shared=true"]),
        (["conflict_stats=true"], ["conflict_stats=true:", "conflict_stats=false"]),
        (["lora.tasks=[sst]", "schedule=sequential"], ["tasks.sts: nothing trains", "add sts to lora.tasks"]),
        (["lora.tasks=[sst]"], ["tasks.sts: nothing trains", "cosine head has no weights"]),
    ],
)
def test_a_plan_with_nothing_to_train_is_refused_before_the_run(settings, parts, tiny_encoder, tmp_path, capsys):
    fails([*tiny(tiny_encoder, tmp_path), "lora.enabled=true", *settings], capsys, *parts)
    assert not (tmp_path / "run").exists()


def test_a_task_added_to_a_run_with_nothing_of_its_own_to_train_is_refused(sst_run, tiny_encoder, tmp_path, capsys):
    argv = [*tiny(tiny_encoder, tmp_path), f"from_run={sst_run}", "tasks={sts: {head: cosine, batch_size: 8}}"]
    fails(argv, capsys, "tasks.sts: nothing trains", f"from_run keeps {sst_run}'s encoder")
    assert not (tmp_path / "run").exists()


def test_an_adapter_only_task_and_a_head_with_weights_still_train(tiny_encoder, tmp_path):
    """The invariant refuses only what cannot train: sts with one extra layer in its cosine head trains that layer."""
    run_cli(str(QUICKSTART), *TINY, f"checkpoint={tiny_encoder}", "lora.enabled=true", "lora.tasks=[sst]",
            "tasks.sts.extra_layers=1", "epochs=1", f"out={tmp_path / 'run'}")  # fmt: skip
    assert (tmp_path / "run" / "summary.json").is_file()


# 2. no setting without effect


@pytest.mark.parametrize(
    "setting, parts",
    [
        ("lora.rank=4", ["lora.rank=4 has no effect", "lora.enabled=true"]),
        ("lora.tasks=[sst]", ["lora.tasks=[sst] has no effect"]),
        ("pals.heads=3", ["pals.heads=3 has no effect", "pals.enabled=true"]),
        ("distill.temperature=3", ["distill.temperature=3.0 has no effect", "distill.teachers"]),
        ("keep_tasks=[sst]", ["keep_tasks:", "from_run"]),
    ],
)
def test_a_setting_the_run_would_ignore_is_refused(setting, parts, tmp_path, capsys):
    fails(["train", QUICKSTART, *TINY, setting, f"out={tmp_path / 'run'}"], capsys, *parts)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "setting, part",
    [("tasks.sts.features=[u]", "tasks.sts.features has no effect"), ("tasks.sst.cosine_scale=2", "cosine_scale")],
)
def test_a_heads_own_setting_under_another_head_is_warned(setting, part, caplog):
    """A base config's features or scale under a head chosen over it (a sweep over heads): warned, not refused."""
    from minbert.config import load_config
    from minbert.multitask.checks import check_effective
    from minbert.multitask.config import TrainConfig

    with caplog.at_level("WARNING"):
        check_effective(load_config(TrainConfig, QUICKSTART, [*TINY, setting]).validate())
    assert any(part in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("method", ["combiner=pcgrad", "conflict_stats=true", "weighting=gls", "weighting=famo"])
@pytest.mark.parametrize("schedule", ["annealed", "proportional", "temperature", "sequential", "round_robin"])
def test_a_method_comparing_tasks_under_one_task_per_step_is_warned(method, schedule, caplog):
    """Each step of every schedule but round-robin holds one task, which a combiner, conflict statistics, GLS or
    FAMO has nothing to compare it with (FAMO's weight is then 1 in every step): warned, as a sweep over schedules
    over such a base is a documented use; round-robin gives them every task and no warning."""
    from minbert.config import load_config
    from minbert.multitask.checks import check_effective
    from minbert.multitask.config import TrainConfig

    with caplog.at_level("WARNING"):
        check_effective(load_config(TrainConfig, QUICKSTART, [*TINY, method, f"schedule={schedule}"]).validate())
    said = [r.getMessage() for r in caplog.records if "compares the tasks of a step" in r.getMessage()]
    if schedule == "round_robin":
        assert not said
    else:
        assert said == [
            f"{method} has no effect: it compares the tasks of a step, and each step of schedule={schedule} holds one "
            "task; use schedule=round_robin (every task in every step)"
        ]


@pytest.mark.parametrize(
    "setting, parts",
    [
        ("pals.enabled=true", ["pals:", "pals.enabled=false", "leave pals out"]),
        ("lora.train_shared=true", ["lora.train_shared=true:", "leave lora.train_shared out"]),
    ],
)
def test_a_setting_from_run_replaces_is_refused(setting, parts, sst_run, tiny_encoder, tmp_path, capsys):
    argv = [*tiny(tiny_encoder, tmp_path), f"from_run={sst_run}", "tasks={quora: {batch_size: 8}}", setting]
    if setting.startswith("lora"):
        argv.append("lora.enabled=true")
    fails(argv, capsys, *parts)


def test_a_sweep_over_a_switched_off_setting_is_refused_before_its_first_run(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(f"base: {QUICKSTART}\ngrid:\n  lora.rank: [4, 8]\nout: {tmp_path / 'out'}\n")
    fails(["sweep", tmp_path / "s.yaml"], capsys, "lora.rank=4 has no effect")
    assert not (tmp_path / "out").exists()


# 3. caches carry a fingerprint and are checked on load


@pytest.fixture(scope="module")
def teacher_cache(sst_run, tiny_encoder):
    """(this run's training data, the targets and fingerprint a run distilling from sst_run computes)."""
    from minbert.config import load_config
    from minbert.data import Tokenizer
    from minbert.model import resolve_checkpoint
    from minbert.multitask.config import TrainConfig
    from minbert.multitask.distill import fingerprint, teacher_targets
    from minbert.multitask.run import load_data

    cfg = load_config(TrainConfig, QUICKSTART, [*TINY, f"checkpoint={tiny_encoder}"]).validate()
    train = load_data(cfg, Tokenizer.from_pretrained(resolve_checkpoint(cfg.checkpoint)), ("train",))["train"]
    teachers = (str(sst_run),)
    return train, teacher_targets(teachers, train, "cpu"), fingerprint(teachers, train)


def _cached(path, teacher_cache, caplog):
    from minbert.multitask.distill import cached_targets

    train, _, fp = teacher_cache
    with caplog.at_level("WARNING"):
        return cached_targets(path, fp, train)


def test_a_cache_from_the_same_teachers_and_data_is_used(teacher_cache, tmp_path, caplog):
    _, targets, fp = teacher_cache
    save_tensors(tmp_path / "t.safetensors", targets, {"fingerprint": fp})
    got = _cached(tmp_path / "t.safetensors", teacher_cache, caplog)
    assert got is not None and torch.equal(got["sst"], targets["sst"]) and not caplog.records


@pytest.mark.parametrize("damage", ["nan", "foreign-rows", "other-fingerprint", "no-fingerprint", "truncated"])
def test_a_bad_or_foreign_cache_is_recomputed_with_a_warning(damage, teacher_cache, tmp_path, caplog):
    _, targets, fp = teacher_cache
    path = tmp_path / "t.safetensors"
    bad = dict(targets)
    meta = {"fingerprint": fp}
    if damage == "nan":
        bad["sst"] = bad["sst"].clone()
        bad["sst"][3] = float("nan")
    elif damage == "foreign-rows":  # another run's rows under this run's fingerprint
        bad["sst"] = bad["sst"][:-5]
    elif damage == "other-fingerprint":
        meta = {"fingerprint": "0" * 64}
    elif damage == "no-fingerprint":
        meta = None
    save_tensors(path, bad, meta)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    assert _cached(path, teacher_cache, caplog) is None
    (record,) = caplog.records
    assert "computing the teachers' targets again" in record.getMessage()


def test_the_fingerprint_changes_with_the_teacher_and_the_data(sst_run, teacher_cache, tmp_path):
    from minbert.multitask.distill import fingerprint

    train, _, fp = teacher_cache
    copy = tmp_path / "copy"
    shutil.copytree(sst_run, copy)
    assert fingerprint((str(copy),), train) != fp  # another run, even with the same weights
    fewer = {t: d for t, d in train.items() if t != "sts"}
    assert fingerprint((str(sst_run),), fewer) != fp


# 4. an error through a key names the key and the fix from here


def test_a_half_written_teacher_is_named_as_its_key(sst_run, tiny_encoder, tmp_path, capsys):
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(sst_run / "config.yaml", half / "config.yaml")  # started, never finished an epoch
    argv = [*tiny(tiny_encoder, tmp_path), f"distill.teachers=[{sst_run}, {half}]"]
    fails(argv, capsys, f"distill.teachers[1]: {half}: has no best checkpoint", "leave it out of distill.teachers")


def test_a_damaged_teacher_or_base_run_is_named_as_its_key(sst_run, tiny_encoder, tmp_path, capsys):
    from minbert.multitask.state import snapshot_folder

    damaged = tmp_path / "damaged"
    shutil.copytree(sst_run, damaged)
    weights = snapshot_folder(damaged, "best") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    fails([*tiny(tiny_encoder, tmp_path), f"distill.teachers=[{damaged}]"], capsys, f"distill.teachers[0]: {damaged}")
    argv = [*tiny(tiny_encoder, tmp_path), f"from_run={damaged}", "tasks={quora: {batch_size: 8}}"]
    fails(argv, capsys, "from_run:", f"minbert train --resume {damaged}")


def test_a_configured_data_dir_that_minbert_data_replaces_is_named(monkeypatch, caplog, tmp_path):
    """$MINBERT_DATA wins over a config's data_dir (the documented rule: runs move between machines), but no longer
    without a word."""
    from minbert.data import choose_data_dir

    monkeypatch.setenv("MINBERT_DATA", str(tmp_path / "env"))
    with caplog.at_level("WARNING"):
        assert choose_data_dir(None, str(tmp_path / "mine")) == str(tmp_path / "env")
    assert "replaced by $MINBERT_DATA" in caplog.text and "mine" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert choose_data_dir(str(tmp_path / "flag"), str(tmp_path / "mine")) == str(tmp_path / "flag")
        assert choose_data_dir(None, "") == str(tmp_path / "env")
    assert not caplog.text
