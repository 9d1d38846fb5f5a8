from dataclasses import dataclass, field
from typing import Literal

import pytest

from minbert.classify import ClassifyConfig
from minbert.config import apply_overrides, from_dict, load_config
from minbert.errors import MinbertError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    steps: int = 1
    inner: Inner = field(default_factory=Inner)
    tasks: tuple[str, ...] = ("sst",)


def test_nested_and_overrides():
    cfg = from_dict(Outer, apply_overrides({"inner": {"kind": "b"}}, ["inner.lr=2e-5", "steps=7", "tasks=[sst,sts]"]))
    assert cfg == Outer(steps=7, inner=Inner(lr=2e-5, kind="b"), tasks=("sst", "sts"))


def test_unknown_key_lists_valid_keys():
    with pytest.raises(MinbertError, match=r"unknown config key 'inner.lrr'; valid keys here: lr, kind"):
        from_dict(Outer, {"inner": {"lrr": 1}})


def test_wrong_type():
    with pytest.raises(MinbertError, match=r"steps: expected int, got 'many'"):
        from_dict(Outer, {"steps": "many"})


def test_bad_choice_lists_choices():
    with pytest.raises(MinbertError, match=r"inner.kind: 'c' is not one of a, b"):
        from_dict(Outer, {"inner": {"kind": "c"}})


def test_int_is_accepted_for_float():
    assert from_dict(Inner, {"lr": 1}).lr == 1.0


def test_malformed_override():
    with pytest.raises(MinbertError, match="key.sub=value"):
        apply_overrides({}, ["lr"])


def test_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("task: cfimdb\nepochs: 2\n")
    cfg = load_config(ClassifyConfig, p, ["lr=1e-5"])
    assert (cfg.task, cfg.epochs, cfg.lr) == ("cfimdb", 2, 1e-5)
    p.write_text("task: imdb\n")
    with pytest.raises(MinbertError, match="task: 'imdb' is not one of sst, cfimdb"):
        load_config(ClassifyConfig, p)


def test_overrides_may_follow_options():
    from minbert.cli import parse_args

    args = parse_args(["train", "configs/x.yaml", "--budget", "out=runs/a", "epochs=2"])
    assert args.config == "configs/x.yaml" and args.budget and args.overrides == ["out=runs/a", "epochs=2"]
    args = parse_args(["classify", "--task", "cfimdb", "lr=1e-5", "--bf16", "epochs=1"])
    assert args.task == "cfimdb" and args.precision == "bf16" and args.overrides == ["lr=1e-5", "epochs=1"]
    with pytest.raises(SystemExit):
        parse_args(["train", "configs/x.yaml", "--budget", "--colour"])


def test_include_lays_a_files_own_keys_over_the_included_one(tmp_path):
    from minbert.config import load_yaml

    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "cpu.yaml").write_text("epochs: 2\nlr: 8.0e-5\ntasks.sst.batch_size: 16\n")
    (tmp_path / "r.yaml").write_text("name: r\nbudget:\n  include: parts/cpu.yaml\n  lr: 1.0e-4\n")
    assert load_yaml(tmp_path / "r.yaml")["budget"] == {"epochs": 2, "lr": 1e-4, "tasks.sst.batch_size": 16}
    (tmp_path / "top.yaml").write_text("include: r.yaml\nname: top\n")  # nested mappings merge key by key
    assert load_yaml(tmp_path / "top.yaml") == {"name": "top", "budget": load_yaml(tmp_path / "r.yaml")["budget"]}
    (tmp_path / "loop.yaml").write_text("include: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("include: loop.yaml\n")
    with pytest.raises(MinbertError, match="includes itself"):
        load_yaml(tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("include: nowhere.yaml\n")
    with pytest.raises((MinbertError, OSError), match="nowhere.yaml"):
        load_yaml(tmp_path / "gone.yaml")
