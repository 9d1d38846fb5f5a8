"""The one shape of every extension family: task samplers (`sampling/`), gradient combiners (`combiners/`), loss
weightings (`weighting/`), regularizers (`regularizers/`), updaters (`lr_schedules/`: learning-rate schedules and
the dynamic margin) and losses (`losses/`).

A family is a folder with a base class whose hooks do nothing by default, one file per member (a subclass), and a
typed registry `dict[str, type[Base]]` in its `__init__.py`. A config names a member by its registry key and gives
its settings, the constructor's keyword arguments with their ranges declared beside them
(`decay: Annotated[float, within(0, 1)] = 0.8`); `build` is the one way a member is made from them.

    >>> from minbert.combiners import COMBINERS
    >>> build(COMBINERS, "gradvac", {"beta": 0.02}).beta
    0.02
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from minbert.config import typed_args
from minbert.errors import MinbertError

M = TypeVar("M")


class Extension:
    """What a member of every family but the losses inherits (a loss is an `nn.Module`, whose state is its
    tensors): its state for checkpoints, none unless it keeps some (GradVac's targets, a schedule's position)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def build(family: Mapping[str, type[M]], name: str, args: Mapping[str, Any] | None = None, *bound) -> M:
    """Member `name` of `family` (a registry) made from its config settings `args`, each checked against its
    constructor's annotation and declared range: an unknown name, argument or type, or a value out of range, is one
    MinbertError. `bound`: what the member acts on that is not a setting (a dynamic margin's loss), passed first, to
    the constructor's positional-only parameters. (`TrainConfig.validate` has checked a config's settings already,
    each under its own config key.)"""
    if name not in family:
        raise MinbertError(f"{name!r} is not one of {', '.join(family)}")
    cls = family[name]
    return cls(*bound, **typed_args(cls, dict(args or {}), name))
