"""Plain dicts (what Tune and YAML hold) ↔ the frozen config dataclasses of :mod:`proda.config`, with each
value coerced to its field's type and an error that names the dotted field."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import fields
from typing import Any

from proda.config import ConfigError


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [to_plain(x) for x in obj]
    return obj


def from_plain(cls: type, d: Any, prefix: str) -> Any:
    name = prefix.rstrip(".") or "config"
    if dataclasses.is_dataclass(d) and isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise ConfigError(f"{name}={d!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in d:
        if key not in known:
            full = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"unknown config field '{full}'{hint}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in d.items()}
    return cls(**kwargs)


def _coerce(tp: Any, v: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_plain(tp, v, path + ".")
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], v, path)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{path}={v!r}: expected a list")
        elem = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(elem, x, path) for x in v)
        if len(v) != len(args):
            raise ConfigError(f"{path}={v!r}: expected a list of {len(args)} values")
        return tuple(_coerce(a, x, path) for a, x in zip(args, v))
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{path}={v!r}: expected true or false")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{path}={v!r}: expected an integer")
        return v
    if tp is float:
        if isinstance(v, str):  # YAML 1.1 reads '2.5e-4' (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{path}={v!r}: expected a number")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{path}={v!r}: expected a string")
        return v
    return v
