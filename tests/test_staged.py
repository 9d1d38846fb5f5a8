"""Staged recipes (report 001: sentiment MNRL first, then multitask fine-tuning): `init_from: RUN` starts a run's
encoder from RUN's best checkpoint, with fresh heads; a sweep variant's `init_from=@VARIANT` chains two variants of
the same seed, so a staged recipe runs end to end with one `minbert sweep`."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from minbert.cli import main
from minbert.multitask.state import snapshot_folder
from tests.helpers import QUICKSTART, TINY, final_weights, run_cli
from tests.test_user_errors import error_line


@pytest.fixture(scope="module")
def first_stage(tiny_encoder, tmp_path_factory):
    run = tmp_path_factory.mktemp("stage1") / "run"
    run_cli(str(QUICKSTART), *TINY, f"checkpoint={tiny_encoder}", "tasks={sst: {batch_size: 8, train_limit: 64}}",
            "epochs=1", "lr=1e-3", f"out={run}")  # fmt: skip
    return run


def test_the_next_stage_starts_from_the_previous_stages_encoder_with_fresh_heads(first_stage, tiny_encoder, tmp_path):
    """With lr 0 nothing moves: the second stage's weights are the first stage's encoder and its own fresh heads."""
    out = tmp_path / "stage2"
    run_cli(str(QUICKSTART), *TINY, f"checkpoint={tiny_encoder}", f"init_from={first_stage}", "lr=0", "epochs=1",
            f"out={out}")  # fmt: skip
    before = load_file(str(snapshot_folder(first_stage, "last") / "model.safetensors"))  # as the stage ended
    after = final_weights(out)
    encoder = [k for k in before if k.startswith("bert.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    start = load_file(str(tiny_encoder / "model.safetensors"))  # the checkpoint the first stage moved away from
    assert any(
        not torch.equal(start[k.removeprefix("bert.")], after[k]) for k in encoder if k.removeprefix("bert.") in start
    )
    assert not torch.equal(before["heads.sst.out.weight"], after["heads.sst.out.weight"])  # a fresh head


@pytest.mark.parametrize(
    "extra, parts",
    [
        (["init_from=RUNPARENT"], ["init_from:", "no config.yaml", "name a run"]),
        (["init_from=RUN", "from_run=RUN", "tasks={quora: {}}"], ["init_from:", "set one of the two"]),
        (["init_from=RUN", "checkpoint=default"], ["init_from:", "give both the same checkpoint"]),
    ],
)
def test_a_bad_init_from_is_one_line_naming_the_key(extra, parts, first_stage, tiny_encoder, tmp_path, capsys):
    words = [w.replace("RUNPARENT", str(first_stage.parent)).replace("RUN", str(first_stage)) for w in extra]
    argv = ["train", str(QUICKSTART), *TINY, f"checkpoint={tiny_encoder}", *words, f"out={tmp_path / 'r'}"]
    assert main(argv) == 2
    line = error_line(capsys.readouterr().err)
    assert all(p in line for p in parts), line
    assert not (tmp_path / "r").exists()


def test_a_staged_sweep_chains_each_seeds_stages_with_one_command(tiny_encoder, tmp_path, capsys):
    """`init_from=@stage1`: stage two of each seed starts from stage one of the same seed (lr 0: its encoder is
    exactly stage one's final encoder), in the order the variants are listed."""
    from minbert.sweep import load_sweep

    tiny = ", ".join(f'"{w}"' for w in [*TINY, f"checkpoint={tiny_encoder}", "epochs=1"])
    (tmp_path / "staged.yaml").write_text(
        f"base: {QUICKSTART}\noverrides: [{tiny}]\n"
        'variants:\n  stage1: ["tasks={sst: {batch_size: 8, train_limit: 64}}", lr=1e-3]\n'
        "  stage2: [init_from=@stage1, lr=0]\n"
        f"seeds: [1, 2]\nout: {tmp_path / 'out'}\n"
    )
    assert main(["sweep", str(tmp_path / "staged.yaml")]) == 0
    for seed in (1, 2):
        one = final_weights(tmp_path / "out" / "stage1" / f"seed{seed}")
        two = final_weights(tmp_path / "out" / "stage2" / f"seed{seed}")
        assert all(torch.equal(one[k], two[k]) for k in one if k.startswith("bert."))
    a, b = (final_weights(tmp_path / "out" / "stage1" / f"seed{s}") for s in (1, 2))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(a[key], b[key])  # the seeds' first stages differ
    # --record on a machine without the runs: a stage source is restored only where its next stage is too; where
    # the next stage must run (its record gone, seed 1) the source runs again for its weights, even if an earlier
    # call (--only stage1) restored it
    record = tmp_path / "record"
    assert main(["sweep", str(tmp_path / "staged.yaml"), "--record", str(record)]) == 0
    shutil.rmtree(tmp_path / "out")
    shutil.rmtree(record / "out" / "stage2" / "seed1")
    assert main(["sweep", str(tmp_path / "staged.yaml"), "--only", "stage1", "--record", str(record)]) == 0
    assert "2 finished runs restored" in capsys.readouterr().out
    assert main(["sweep", str(tmp_path / "staged.yaml"), "--dry-run", "--record", str(record)]) == 0
    log = capsys.readouterr().out  # what the real call below does, said without doing it
    assert "stage1 seed 1: new" in log and "stage2 seed 1: new" in log
    assert "stage1 seed 2: done\n" in log and "stage2 seed 2: done (in the record)" in log
    assert (tmp_path / "out" / "stage1" / "seed1" / "summary.json").is_file()
    assert main(["sweep", str(tmp_path / "staged.yaml"), "--record", str(record)]) == 0
    log = capsys.readouterr().out
    assert "1 finished runs restored" in log
    assert "stage1 seed 1: new" in log and "stage2 seed 1: new" in log
    assert "stage1 seed 2: done" in log and "stage2 seed 2: done" in log
    assert (record / "out" / "stage2" / "seed1" / "summary.json").is_file()  # kept again
    (tmp_path / "bad.yaml").write_text(
        f"base: {QUICKSTART}\nvariants:\n  stage2: [init_from=@stage1]\n  stage1: []\nout: {tmp_path / 'o2'}\n"
    )
    with pytest.raises(Exception, match="init_from=@stage1 names no earlier variant"):
        load_sweep(tmp_path / "bad.yaml")
