"""Every extension family has one shape: a base class whose hooks and state do nothing by default, a typed registry
of its subclasses, and `registry.build` as the one way to make a member from config settings, each checked against
its constructor's annotation and range."""

import importlib
import typing

import pytest
import torch

from minbert.combiners.base import Combiner
from minbert.config import load_config
from minbert.errors import MinbertError
from minbert.losses import LOSSES
from minbert.losses.base import Loss
from minbert.lr_schedules import UPDATERS
from minbert.lr_schedules.base import Updater
from minbert.multitask.config import TrainConfig
from minbert.registry import Extension, build
from minbert.regularizers.base import Regularizer
from minbert.sampling import SAMPLERS
from minbert.sampling.base import Sampler
from tests.helpers import QUICKSTART

FAMILIES = {  # registry: (its package, its base class)
    "SAMPLERS": ("sampling", Sampler),
    "COMBINERS": ("combiners", Combiner),
    "REGULARIZERS": ("regularizers", Regularizer),
    "UPDATERS": ("lr_schedules", Updater),
    "LOSSES": ("losses", Loss),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_a_registry_is_typed_and_holds_subclasses_of_its_base(name):
    package, base = FAMILIES[name]
    module = importlib.import_module(f"minbert.{package}")
    assert typing.get_type_hints(module)[name] == dict[str, type[base]]
    members = getattr(module, name)
    assert members and all(issubclass(cls, base) for cls in members.values())


def test_the_no_op_defaults_are_written_once():
    for base in (Sampler, Combiner, Regularizer, Updater):
        assert issubclass(base, Extension)
        assert base.state_dict is Extension.state_dict and base.load_state_dict is Extension.load_state_dict
    member = Extension()
    assert member.state_dict() == {} and member.load_state_dict({"x": 1}) is None
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert Updater().on_step(opt, 0, 10) is None and Updater().on_epoch_end(opt, 1, 0.5, {}) == {}
    assert Regularizer().after_step(None) is None and opt.param_groups[0]["lr"] == 1.0


def test_build_types_and_range_checks_the_settings():
    plateau = build(UPDATERS, "plateau", {"patience": 2, "factor": 1})
    assert (plateau.patience, plateau.factor) == (2, 1.0) and isinstance(plateau.factor, float)
    assert build(SAMPLERS, "annealed", {"decay": 0.5}).decay == 0.5 and build(SAMPLERS, "annealed").decay == 0.8
    with pytest.raises(MinbertError, match=r"plateau\.patience: 0 must be >= 1"):
        build(UPDATERS, "plateau", {"patience": 0})
    with pytest.raises(MinbertError, match=r"annealed\.decay: 2\.0 must be in \[0, 1\]"):
        build(SAMPLERS, "annealed", {"decay": 2})
    with pytest.raises(MinbertError, match=r"plateau\.steps: unknown argument; valid: factor, patience"):
        build(UPDATERS, "plateau", {"steps": 3})
    with pytest.raises(MinbertError, match=r"mse\.reduction: unknown argument; valid: none"):
        build(LOSSES, "mse", {"reduction": 1.0})  # no constructor of its own: nn.Module's *args, **kwargs take none
    with pytest.raises(MinbertError, match=r"'nope' is not one of sequential, round_robin, proportional, annealed"):
        build(SAMPLERS, "nope", {})


def test_what_a_member_acts_on_is_passed_to_build_and_is_no_setting():
    loss = LOSSES["cosine_embedding"](margin=0.5)
    margin = build(UPDATERS, "dynamic_margin", {"step": 0.1}, loss, "sts", "sts/pearson")
    assert margin.loss is loss and margin.step == 0.1
    assert margin.on_epoch_end(None, 1, 0.0, {"sts/pearson": 0.5}) == {"margin/sts": pytest.approx(0.4)}
    with pytest.raises(MinbertError, match=r"dynamic_margin\.loss: unknown argument; valid: step"):
        build(UPDATERS, "dynamic_margin", {"step": 0.1, "loss": 1.0}, loss, "sts", "sts/pearson")
    # built per task from tasks.<task>.margin_step, so lr_schedule does not offer it
    with pytest.raises(MinbertError, match=r"lr_schedule: 'dynamic_margin' unknown; valid: constant, plateau, warm"):
        load_config(TrainConfig, QUICKSTART, ["lr_schedule=dynamic_margin"]).validate()
