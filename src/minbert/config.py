"""Typed configs: frozen dataclasses filled from YAML files and `a.b=c` overrides.

Every key is checked against the dataclass: an unknown key, a wrong type, a value outside a `Literal` or outside the
`Range` declared beside the field (`lr: Annotated[float, ge(0)] = 5e-5`), or a non-finite number is refused before
any work starts, with the valid keys or values listed. The constructors of extension families' members declare
their arguments' ranges the same way, and `typed_args` checks them (for `registry.build`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from minbert.errors import MinbertError
from minbert.files import atomic_write_text, parse_yaml, read_yaml

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """The values a number may take, declared once beside its config field or constructor parameter:
    `steps: Annotated[int, ge(1)] = 1`. `also`: values allowed outside the interval (e.g. 0 = off)."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    also: tuple = ()
    note: str = ""

    def holds(self, v) -> bool:
        if v in self.also:
            return True
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def __str__(self) -> str:
        lo, hi = _num(self.lo), _num(self.hi)
        if self.hi == math.inf:
            text = f"{'>' if self.lo_open else '>='} {lo}"
        elif self.lo == -math.inf:
            text = f"{'<' if self.hi_open else '<='} {hi}"
        else:
            text = f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        return text + (f" ({self.note})" if self.note else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def ge(lo: float, note: str = "", also: tuple = ()) -> Range:
    return Range(lo=lo, note=note, also=also)


def gt(lo: float, note: str = "", also: tuple = ()) -> Range:
    return Range(lo=lo, lo_open=True, note=note, also=also)


def within(lo: float, hi: float, bounds: str = "[]", note: str = "") -> Range:
    """`bounds`: "[]", "[)", "(]" or "()" as in interval notation."""
    return Range(lo, hi, bounds[0] == "(", bounds[1] == ")", (), note)


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass `cls` from a plain dict, checking every key and type."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise MinbertError(f"{where or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise MinbertError(f"unknown config key {_join(where, unknown[0])!r}; valid keys here: {', '.join(fields)}")
    kwargs = {k: convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def convert(tp, value, key: str):
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        value = convert(args[0], value, key)
        for r in tp.__metadata__:
            if isinstance(r, Range) and not r.holds(value):
                raise MinbertError(f"{key}: {value!r} must be {r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return convert(a, value, key)
            except MinbertError as e:
                errors.append(str(e))
        raise MinbertError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise MinbertError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise MinbertError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise MinbertError(f"{key}: expected a mapping, got {value!r}")
        return {k: convert(args[1], v, _join(key, k)) for k, v in value.items()}
    if tp is Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise MinbertError(f"{key}: {value!r} is not a finite number")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string; users mean a number
        try:
            value = float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise MinbertError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
        if tp is float and not math.isfinite(value):
            raise MinbertError(f"{key}: {value!r} is not a finite number")
        return value
    raise TypeError(f"config field {key} has unsupported type {tp}")  # a bug in a config class, not user input


def typed_args(fn, args: dict, where: str) -> dict:
    """Keyword arguments for a constructor `fn` (an extension family's member, `registry.build`) from a config
    mapping: each name one of its parameters, each value converted to that parameter's annotated type (so
    `patience: 3` is an int and `eps: 1e-6` a float) and inside its declared range; an unknown name, a wrong type or
    a value out of range is one MinbertError naming `where.name`."""
    # positional-only parameters are what the member acts on (a dynamic margin's loss), not settings
    settings = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [n for n, p in inspect.signature(fn).parameters.items() if n != "self" and p.kind in settings]
    hints = get_type_hints(fn.__init__ if isinstance(fn, type) else fn, include_extras=True)
    out = {}
    for name, value in args.items():
        if name not in params:
            valid = ", ".join(params) or "none"
            raise MinbertError(f"{_join(where, name)}: unknown argument; valid: {valid}")
        out[name] = convert(hints.get(name, Any), value, _join(where, name))
    return out


def to_dict(obj) -> dict:
    """Plain dict of a config (tuples become lists so YAML stays readable)."""
    return _plain(dataclasses.asdict(obj))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=c` strings to a nested dict; values are parsed as YAML (`lr=2e-5`, `tasks=[sst,sts]`)."""
    data = _plain(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise MinbertError(f"override {item!r} is not of the form key.sub=value")
        set_dotted(data, key, _parse_value(raw))
    return data


def set_dotted(data: dict, key: str, value) -> None:
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise MinbertError(
                f"override {key!r}: {p!r} is {node!r:.40} (a {type(node).__name__}) where the override needs a "
                "section of keys; fix the config file's value or the override"
            )
    node[parts[-1]] = value


def _parse_value(raw: str):
    try:
        value = parse_yaml(raw, f"override value {raw!r}")
    except MinbertError:  # not YAML: a plain string (a file name pattern like {split}-{task}.csv)
        return raw
    # YAML 1.1 reads "1e-5" as a string; users mean a number.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_yaml(path: str | Path) -> dict:
    """A config file with its `include:` keys resolved: a mapping that holds `include: FILE` (a path relative to
    the file that names it) is that file's mapping with the mapping's own keys laid over it, key by key (so a
    recipe's `budget: {include: budget/cpu.yaml, lr: 1e-4}` shares the common block and changes one key)."""
    path = Path(path)
    return _included(read_yaml(path, "config file"), path, (path.resolve(),))


def _included(node, path: Path, chain: tuple[Path, ...]):
    if not isinstance(node, dict):
        return node
    node = {k: _included(v, path, chain) for k, v in node.items()}
    if "include" not in node:
        return node
    name = node.pop("include")
    if not isinstance(name, str) or not name:
        raise MinbertError(f"{path}: include: expected a file name (relative to {path.parent}), got {name!r}")
    target = path.parent / name
    if target.resolve() in chain:
        raise MinbertError(f"{path}: include {name}: the file includes itself (through {' -> '.join(map(str, chain))})")
    base = _included(read_yaml(target, "included config file"), target, (*chain, target.resolve()))
    return _laid_over(base, node)


def _laid_over(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _laid_over(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = (), budget: bool = False) -> T:
    """YAML file, then (with budget=True) its `budget:` section of dotted keys, then the command-line overrides."""
    data = load_yaml(path) if path else {}
    if budget:
        section = data.get("budget") or {}
        if not section:
            raise MinbertError(f"{path}: --budget given but the file has no budget section")
        for key, value in section.items():
            set_dotted(data, key, value)
    return from_dict(cls, apply_overrides(data, list(overrides)))


def dump_yaml(obj, path: Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(obj), sort_keys=False))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
