"""Typed configuration objects from YAML files or plain mappings (papermill parameters).

Every stage's settings are a frozen dataclass. :func:`from_mapping` builds one from a dict,
refusing unknown keys and values of the wrong type with a :class:`MagnbError` that names the file
(or "parameters") and the key, so a typo in a config fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from magnb.errors import MagnbError

T = TypeVar("T")


def _check(value: Any, annotation: Any, key: str, where: str) -> Any:
    """Coerce ``value`` to ``annotation`` where that is lossless (list -> tuple, int -> float,
    str -> Path), else raise MagnbError."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _check(value, option, key, where)
            except MagnbError as exc:
                errors.append(exc)
        raise MagnbError(f"{key} = {value!r} is not {_describe(annotation)}", where)
    if annotation is type(None):
        if value is None:
            return None
        raise MagnbError(f"{key} = {value!r} is not None", where)
    if origin is Literal:
        if value in args:
            return value
        raise MagnbError(f"{key} = {value!r} must be one of {list(args)}", where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise MagnbError(f"{key} = {value!r} must be a list", where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise MagnbError(f"{key} = {value!r} must have {len(args)} entries", where)
        return tuple(
            _check(v, a, f"{key}[{i}]", where)
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise MagnbError(f"{key} must be a mapping", where)
        return dict(value)
    if annotation is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise MagnbError(f"{key} = {value!r} must be a path", where)
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise MagnbError(f"{key} = {value!r} must be a number", where)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise MagnbError(f"{key} = {value!r} must be an integer", where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise MagnbError(f"{key} = {value!r} must be true or false", where)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise MagnbError(f"{key} = {value!r} must be a string", where)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise MagnbError(f"{key} must be a mapping", where)
        return from_mapping(annotation, value, where, prefix=f"{key}.")
    return value


def _describe(annotation: Any) -> str:
    return str(annotation).replace("typing.", "")


def from_mapping(
    cls: type[T], mapping: Mapping[str, Any], where: str = "parameters", prefix: str = ""
) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and wrong types are MagnbErrors."""
    if not isinstance(mapping, Mapping):
        raise MagnbError(f"expected a mapping of settings, got {type(mapping).__name__}", where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise MagnbError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(fields))}",
            where,
        )
    values = {}
    for name, value in mapping.items():
        values[name] = _check(value, hints[name], prefix + name, where)
    missing = [
        n
        for n, f in fields.items()
        if n not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise MagnbError(f"missing required key(s) {', '.join(prefix + m for m in missing)}", where)
    try:
        return cls(**values)
    except MagnbError:
        raise
    except (TypeError, ValueError) as exc:
        raise MagnbError(str(exc), where) from exc


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file, with MagnbErrors for a missing file or bad YAML."""
    path = Path(path)
    if not path.is_file():
        raise MagnbError("config file not found", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise MagnbError(f"invalid YAML ({exc})", path, None if line is None else line + 1) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MagnbError("the config must be a mapping of key: value", path)
    return data


def to_mapping(obj: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-safe values (paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)
