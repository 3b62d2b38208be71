"""Dataclasses from JSON, checked against their type hints: `from_json(Cls, data)`.

One checker for every typed JSON file of the lab. A field's type hint says what it takes: `int`
(not a bool), `float` (an int too), `str`, `bool`, `None`, unions (`X | None`), `Literal[...]`,
`list[T]`, `tuple[T, ...]`, `dict[str, T]`, `Path` (a string), `Any` and nested dataclasses (JSON
objects). Keys the
dataclass does not name are ignored; a field without a default must be present. A value of
another type raises JsonTypeError whose message names the field by its path:
"'process.pid' must be an integer, not \"x\"".
"""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class JsonTypeError(ValueError):
    """A JSON value that does not fit the type its field declares (the message names the field)."""


def from_json(cls: type[T], data: Any, *, path: str = "") -> T:
    """An instance of dataclass `cls` from the JSON object `data` (JsonTypeError when it does not
    fit); `path` prefixes field names in messages (a nested object's own path)."""
    if not isinstance(data, dict):
        raise JsonTypeError(_message(path, "an object", data))
    hints = get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        where = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise JsonTypeError(f"'{where}' is missing")
            continue
        values[f.name] = _convert(hints[f.name], data[f.name], where)
    return cls(**values)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for arm in args:
            try:
                return _convert(arm, value, path)
            except JsonTypeError:
                continue
        raise JsonTypeError(_message(path, describe(hint), value))
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value, path=path)  # type: ignore[arg-type]
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
    elif origin in (list, tuple) and isinstance(value, list):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise JsonTypeError(_message(path, describe(hint), value))
            return tuple(
                _convert(a, v, f"{path}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        items = (
            [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)] if args else value
        )
        return tuple(items) if origin is tuple else items
    elif origin is dict and isinstance(value, dict):
        key_type, value_type = args or (str, Any)
        if key_type is not str:
            raise TypeError(f"JSON object keys are strings: {hint}")
        return {k: _convert(value_type, v, f"{path}.{k}") for k, v in value.items()}
    elif hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is Path:
        if isinstance(value, str):
            return Path(value)
    elif hint in (str, bool):
        if isinstance(value, hint):
            return value
    elif origin is None and isinstance(hint, type) and hint not in (list, dict, tuple):
        raise TypeError(f"from_json does not read {hint.__name__} fields")
    raise JsonTypeError(_message(path, describe(hint), value))


def describe(hint: Any) -> str:
    """What a type hint takes, in words: "an integer or null", "one of 'a', 'b'"."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arm) for arm in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "an object"
    names = {
        type(None): "null",
        float: "a number",
        int: "an integer",
        str: "a string",
        Path: "a path",
    }
    return names.get(hint, "true or false" if hint is bool else "any value")


def _message(path: str, expected: str, value: Any) -> str:
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return (
        f"'{path}' must be {expected}, not {shown}" if path else f"must be {expected}, not {shown}"
    )
