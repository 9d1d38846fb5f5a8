"""Typed configs: frozen dataclasses filled from YAML files and `a.b=c` overrides.

Every key is checked against the dataclass: an unknown key, a wrong type or a value outside a `Literal` is refused
before any work starts, with the valid keys or values listed.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from minbert.errors import MinbertError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass `cls` from a plain dict, checking every key and type."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise MinbertError(f"{where or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise MinbertError(f"unknown config key {_join(where, unknown[0])!r}; valid keys here: {', '.join(fields)}")
    kwargs = {k: _convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _convert(tp, value, key: str):
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(a, value, key)
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
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise MinbertError(f"{key}: expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, _join(key, k)) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string; users mean a number
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool):
        if type(value) is not tp:
            raise MinbertError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
        return value
    raise TypeError(f"config field {key} has unsupported type {tp}")  # a bug in a config class, not user input


def typed_args(fn, args: dict, where: str) -> dict:
    """Keyword arguments for a technique's constructor `fn` from a config mapping: each name one of its parameters,
    each value converted to that parameter's annotated type (so `patience: 3` is an int and `eps: 1e-6` a float);
    an unknown name or a wrong type is one MinbertError naming `where.name`."""
    params = [n for n in inspect.signature(fn).parameters if n != "self"]
    hints = get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
    out = {}
    for name, value in args.items():
        if name not in params:
            valid = ", ".join(params) or "none"
            raise MinbertError(f"{_join(where, name)}: unknown argument; valid: {valid}")
        out[name] = _convert(hints.get(name, Any), value, _join(where, name))
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
            raise MinbertError(f"override {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def _parse_value(raw: str):
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # YAML 1.1 reads "1e-5" as a string; users mean a number.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MinbertError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MinbertError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise MinbertError(f"{path}: a config file must be a mapping of keys")
    return data


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
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
