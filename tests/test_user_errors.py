"""What a user can get wrong, table-driven: each case ends with exit 2 and one line naming the culprit (a key, a
file, a path), no traceback, and nothing lost. Then checkpoints: kept two deep, checked on load, falling back to the
one before when the newest is damaged, and a pointer rebuilt from the folders."""

import errno
import json
import logging
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from minbert.cli import main
from minbert.errors import MinbertError
from minbert.multitask.state import load_snapshot, save_snapshot, snapshot_folder
from tests.helpers import QUICKSTART, RESUMABLE, TINY


def error_line(err: str) -> str:
    """The one `minbert: error:` line of a failed command (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("minbert: error:")]
    assert len(lines) == 1, err
    return lines[0]


CONFIG_CASES = [
    ("tasks.sst.colour=red", "unknown config key 'tasks.sst.colour'; valid keys here: head, loss"),
    ("lr=fast", "lr: expected float"),
    ("schedule=random_walk", "schedule: 'random_walk' unknown; valid: sequential, round_robin, proportional, annealed"),
    (
        "schedule=plateau",
        "schedule: 'plateau' unknown; valid: sequential, round_robin, proportional, annealed, temperature, "
        "weighted ('plateau' is a lr_schedule: set lr_schedule=plateau)",
    ),
    (
        "lr_schedule=annealed",
        "lr_schedule: 'annealed' unknown; valid: constant, plateau, warmup_linear "
        "('annealed' is a schedule: set schedule=annealed)",
    ),
    ("tasks.sts.loss=huber", "tasks.sts.loss: 'huber' unknown; valid: ce, bce, mse"),
    ("tasks.sts.head=linear", "does not fit a pair task; valid: concat, concat_sigmoid, cosine, cross"),
    ("tasks.quora.head=cosine", "tasks.quora.loss: 'bce' needs a logit, and head 'cosine' gives a score"),
    ("tasks.imdb.head=linear", "tasks.imdb: unknown task; valid: sst, quora, sts, cfimdb"),
    ("regularizers={smart: {steps: two}}", "regularizers.smart.steps: expected int, got 'two'"),
    ("regularizers={bregman: {eta: 0.1}}", "regularizers.bregman.eta: unknown argument; valid: mu, beta"),
    ("combiner_args={beta: 0.1}", "combiner_args.beta: unknown argument; valid: none"),
    ("custom_tasks.mood.text=[text]", "custom_tasks.mood.files: name the train and dev file(s)"),
    ("custom_tasks.mood.files={train: a.jsonl, dev: b.jsonl}", "custom_tasks.mood: a classification task needs labels"),
    ("custom_tasks.sst.files={train: a.csv, dev: b.csv}", "custom_tasks.sst: a built-in task has this name"),
    ("tasks.sts.margin_step=0.1", "tasks.sts.margin_step: a dynamic margin needs loss cosine_embedding, not 'mse'"),
    ("combiner=graddrop", "combiner: 'graddrop' unknown; valid: sum, pcgrad, gradvac, upgrad, mgda, cagrad"),
    ("regularizers.r3f.weight=1", "regularizers: 'r3f' unknown; valid: smart, bregman"),
    ("lr=-1e-3", "lr: -0.001 must be >= 0"),
    ("tasks.sst.batch_size=0", "tasks.sst.batch_size: 0 must be >= 1"),
    ("steps_per_epoch=-3", "steps_per_epoch: -3 must be >= 0"),
    ("tasks.sts.dropout=1.5", "tasks.sts.dropout: 1.5 must be in [0, 1)"),
    ("layer_lr_decay=1.5", "layer_lr_decay: 1.5 must be in (0, 1]"),
    (
        "tasks.sst.loss=mse",
        "tasks.sst.loss: 'mse' trains a score of head 'linear', but sst's predictions read class logits (5 classes); "
        "use loss ce",
    ),
    ("tasks.quora.loss=mse", "tasks.quora.loss: 'mse' trains a score of head 'concat', but quora's predictions read"),
    ("tasks.quora.loss=mnrl", "use loss ce, bce or head concat_sigmoid, cosine, or add 'mnrl' under extra_losses"),
    ("tasks.sst.max_length=1000", "tasks.sst.max_length: 1000 is more than the checkpoint's 512 positions"),
    ("log_every=0", "log_every: 0 must be >= 1"),
    ("epochs=0", "epochs: 0 must be in [1, 100000]"),
    (
        ("frozen=true", "regularizers.smart.weight=1"),
        "regularizers: acts on the encoder, which frozen=true keeps fixed",
    ),
    ("frozen=true", "tasks.sts: a cosine head without extra_layers has no weights, so frozen=true leaves it nothing"),
    ("prediction_files=out.csv", "prediction_files: 'out.csv' gives files of different splits or tasks one name"),
    ("prediction_files={split}-{colour}.csv", "prediction_files: '{split}-{colour}.csv' is not a file name pattern"),
    ("max_steps=-1", "max_steps: -1 must be >= 0"),
]


@pytest.mark.parametrize("override,message", CONFIG_CASES)
def test_bad_configs_fail_before_any_work(override, message, capsys, tmp_path):
    overrides = override if isinstance(override, tuple) else (override,)
    assert main(["train", str(QUICKSTART), *overrides, f"out={tmp_path / 'never'}"]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert not (tmp_path / "never").exists()


class Evil:
    def __reduce__(self):  # unpickling this would call print: any code could run instead
        return (print, ("unpickled!",))


def truncated_weights(ckpt, d):
    d.joinpath("model.safetensors").write_bytes(ckpt.joinpath("model.safetensors").read_bytes()[:5000])


def pickled_object(ckpt, d):
    torch.save({"embeddings.word_embeddings.weight": Evil()}, d / "pytorch_model.bin")


def other_vocabulary(ckpt, d):
    d.joinpath("model.safetensors").symlink_to(ckpt / "model.safetensors")
    d.joinpath("vocab.txt").write_text("".join(ckpt.joinpath("vocab.txt").read_text().splitlines(keepends=True)[:1000]))


@pytest.mark.parametrize(
    "damage,message",
    [
        (truncated_weights, "model.safetensors: not a readable safetensors file"),
        (pickled_object, "pytorch_model.bin: refused: the file holds Python objects besides tensors"),
        (other_vocabulary, "vocab.txt: 1000 tokens, but the checkpoint's embedding table has 30522 rows"),
    ],
)
def test_a_bad_checkpoint_directory_is_one_line(damage, message, ckpt, capsys, tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    for f in ("config.json", "vocab.txt"):
        shutil.copy(ckpt / f, d / f)
    damage(ckpt, d)
    assert main(["train", str(QUICKSTART), f"checkpoint={d}", f"out={tmp_path / 'never'}"]) == 2
    line = error_line(capsys.readouterr().err)
    assert message in line and str(d) in line
    assert "unpickled!" not in capsys.readouterr().out


def test_run_directory_cases(tmp_path, capsys):
    finished = tmp_path / "done"
    finished.mkdir()
    (finished / "config.yaml").write_text("name: earlier\n")
    (finished / "summary.json").write_text("{}")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["train", str(QUICKSTART), f"out={finished}"], f"{finished}: already holds a run (config.yaml)"),
        (["train", str(QUICKSTART), f"out={a_file / 'run'}"], f"{a_file} is a file, not a folder"),
        (["evaluate", str(tmp_path)], f"{tmp_path}: no config.yaml; is this a minbert train run directory?"),
        (["ensemble", str(finished), "--out", str(tmp_path / "e"), "--min", "colour=1"], "--min colour: unknown task"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in error_line(capsys.readouterr().err), argv
    assert (finished / "config.yaml").read_text() == "name: earlier\n" and (
        finished / "summary.json"
    ).read_text() == "{}"


@pytest.mark.parametrize(
    "code,hint", [(errno.ENOSPC, "free some space"), (errno.EROFS, "choose a folder you may write to")]
)
def test_a_full_disk_or_read_only_folder_is_one_line(code, hint, monkeypatch, capsys, tmp_path):
    def fail(run):
        raise OSError(code, "simulated", str(run / "plots" / "loss_per_task.png"))

    monkeypatch.setattr("minbert.plot.plot_run", fail)
    assert main(["plot", str(tmp_path)]) == 2
    line = error_line(capsys.readouterr().err)
    assert "loss_per_task.png: simulated;" in line and hint in line


def test_an_unexpected_os_error_is_still_a_traceback(monkeypatch, tmp_path):
    def fail(run):
        raise OSError(errno.EBADF, "a bug of ours")

    monkeypatch.setattr("minbert.plot.plot_run", fail)
    with pytest.raises(OSError, match="a bug of ours"):
        main(["plot", str(tmp_path)])


def test_data_dir_rule_flag_then_env_then_saved(tmp_path, monkeypatch):
    from minbert.config import dump_yaml
    from minbert.data import choose_data_dir
    from minbert.multitask.config import TrainConfig
    from minbert.multitask.run import load_run_config

    dump_yaml(TrainConfig(data_dir="/saved"), tmp_path / "config.yaml")
    monkeypatch.delenv("MINBERT_DATA", raising=False)
    assert load_run_config(tmp_path).data_dir == "/saved"
    assert choose_data_dir(None, "") == ""  # then ../shared/data
    monkeypatch.setenv("MINBERT_DATA", "/env")
    assert load_run_config(tmp_path).data_dir == "/env"
    assert load_run_config(tmp_path, "/flag").data_dir == "/flag"


def test_tsne_on_a_small_dev_set_lowers_its_perplexity_or_skips(tmp_path, caplog):
    import numpy as np

    from minbert.analysis import plot_tsne

    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING):
        assert plot_tsne(rng.normal(size=(12, 8)), np.arange(12) % 5, tmp_path / "t.png", "t", 30.0, 0).is_file()
        assert plot_tsne(rng.normal(size=(3, 8)), np.arange(3), tmp_path / "u.png", "u", 30.0, 0) is None
    assert "perplexity 30 lowered to 3.67 for 12 examples" in caplog.text and "needs at least 4 examples" in caplog.text


# checkpoints


def snap(run, step, value, kind="last"):
    m = nn.Linear(3, 3)
    nn.init.constant_(m.weight, float(value))
    save_snapshot(run, kind, step, m, state={"step": step})


def loaded(run, kind="last"):
    m = nn.Linear(3, 3)
    state = load_snapshot(run, kind, m)
    assert torch.all(m.weight == float(state["step"]))
    return state["step"]


def test_the_newest_two_are_kept_with_their_checksums(tmp_path):
    for step in (1, 2, 3):
        snap(tmp_path, step, step)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last-00000002", "last-00000003"]
    pointer = json.loads((tmp_path / "last.json").read_text())
    assert [e["step"] for e in pointer["checkpoints"]] == [3, 2] and pointer["folder"] == "last-00000003"
    assert len(pointer["checkpoints"][0]["files"]["model.safetensors"]["sha256"]) == 64
    assert loaded(tmp_path) == 3


def truncate(f):
    f.write_bytes(f.read_bytes()[:100])


def flip_a_byte(f):
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: truncate(folder / "model.safetensors"),
        lambda folder: flip_a_byte(folder / "model.safetensors"),  # same size: only the checksum sees it
        lambda folder: (folder / "state.json").unlink(),
        lambda folder: shutil.rmtree(folder),
    ],
    ids=["truncated", "flipped-byte", "no-state", "folder-gone"],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(damage, tmp_path, caplog):
    snap(tmp_path, 1, 1)
    snap(tmp_path, 2, 2)
    damage(tmp_path / "checkpoints" / "last-00000002")
    with caplog.at_level(logging.WARNING):
        assert loaded(tmp_path) == 1
    assert "last checkpoint at step 2 is damaged" in caplog.text
    assert snapshot_folder(tmp_path, "last").name == "last-00000001"


@pytest.mark.parametrize(
    "pointer", [None, "{not json", '{"folder": "last-00000009"}'], ids=["missing", "garbage", "wrong"]
)
def test_a_missing_or_broken_pointer_is_rebuilt_from_the_folders(pointer, tmp_path, caplog):
    snap(tmp_path, 1, 1)
    snap(tmp_path, 2, 2)
    if pointer is None:
        (tmp_path / "last.json").unlink()
    else:
        (tmp_path / "last.json").write_text(pointer)
    with caplog.at_level(logging.WARNING):
        assert loaded(tmp_path) == 2
    if pointer != '{"folder": "last-00000009"}':  # a readable pointer naming a missing folder is passed over instead
        assert "rebuilding it from 2 checkpoint folder(s)" in caplog.text
        assert json.loads((tmp_path / "last.json").read_text())["folder"] == "last-00000002"


def test_every_checkpoint_damaged_is_one_error_naming_the_file(tmp_path):
    snap(tmp_path, 1, 1)
    snap(tmp_path, 2, 2)
    for folder in (tmp_path / "checkpoints").iterdir():
        truncate(folder / "model.safetensors")
    with pytest.raises(MinbertError, match=r"no intact last checkpoint: .*last-00000002/model.safetensors: 100 bytes"):
        loaded(tmp_path)
    with pytest.raises(MinbertError, match="no last checkpoint .*is this a minbert train run directory"):
        loaded(tmp_path / "elsewhere")


def test_an_intact_checkpoint_of_another_model_is_refused_not_skipped(tmp_path):
    snap(tmp_path, 1, 1)
    with pytest.raises(MinbertError, match="does not fit the model config.yaml describes"):
        load_snapshot(tmp_path, "last", nn.Linear(4, 4))


@pytest.mark.slow
def test_resume_after_the_newest_checkpoint_is_truncated_continues_from_the_one_before(tmp_path, tiny_encoder):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "minbert", "train"]
    args = [*TINY, *RESUMABLE, f"checkpoint={tiny_encoder}", f"out={run}"]
    subprocess.run([*cmd, str(QUICKSTART), *args], check=True, capture_output=True)
    final = load_file(str(run / "checkpoints" / "last-00000012" / "model.safetensors"))
    lines = (run / "metrics.jsonl").read_text().count("\n")
    (run / "summary.json").unlink()  # as if killed after its last save, then the newest checkpoint was damaged
    truncate(run / "checkpoints" / "last-00000012" / "optimizer.safetensors")
    done = subprocess.run([*cmd, "--resume", str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (
        "last checkpoint at step 12 is damaged" in done.stderr
        and "continuing from the last checkpoint at step 10" in done.stderr
    )
    again = load_file(str(run / "checkpoints" / "last-00000012" / "model.safetensors"))
    assert all(torch.equal(final[k], again[k]) for k in final)  # the two replayed steps land on the same weights
    assert (run / "summary.json").is_file() and (run / "metrics.jsonl").read_text().count("\n") == lines


def test_train_takes_checkpoint_as_a_flag(tmp_path, capsys):
    assert main(["train", str(QUICKSTART), "--checkpoint", str(tmp_path / "nowhere"), f"out={tmp_path / 'x'}"]) == 2
    assert f"checkpoint directory {tmp_path / 'nowhere'} does not exist" in error_line(capsys.readouterr().err)
