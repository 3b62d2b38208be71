"""Dataclasses from JSON, checked against their type hints: `from_json(Cls, data)`.

One checker for every typed JSON file of the lab. A field's type hint says what it takes: `int`
(not a bool), `float` (an int too), `str`, `bool`, `None`, unions (`X | None`), `Literal[...]`,
`list[T]`, `tuple[T, ...]`, `dict[str, T]`, `Path` (a string), `Any` and nested dataclasses
(objects). Keys the dataclass does not name are ignored; a field without a default must be
present. A value of another type raises JsonTypeError naming the field by its path:
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
        arms = [arm for arm in args if arm is not type(None)]
        if value is None and len(arms) < len(args):
            return None
        if len(arms) == 1:  # X | None: X's own message, naming the innermost field
            return _convert(arms[0], value, path)
        for arm in arms:
            try:
                return _convert(arm, value, path)
            except JsonTypeError:
                continue
    elif dataclasses.is_dataclass(hint):
        return from_json(hint, value, path=path)  # type: ignore[arg-type]
    elif origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
    elif hint in (list, tuple, dict):
        return _convert(
            {list: list[Any], tuple: tuple[Any, ...], dict: dict[str, Any]}[hint], value, path
        )
    elif origin in (list, tuple) and isinstance(value, list):
        if origin is list or args[1:] == (Ellipsis,):
            items = [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        if len(value) == len(args):
            return tuple(
                _convert(a, v, f"{path}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
    elif origin is dict and isinstance(value, dict):
        if args[0] is not str:
            raise TypeError(f"JSON object keys are strings, not {args[0]}")
        return {k: _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is Path:
        if isinstance(value, str):
            return Path(value)
    elif hint in (str, bool, type(None)):
        if isinstance(value, hint):
            return value
    elif origin is None:
        raise TypeError(f"from_json does not read {hint} fields")
    raise JsonTypeError(_message(path, describe(hint), value))


def describe(hint: Any) -> str:
    """What a type hint takes, in words: "an integer or null", "one of 'a', 'b'"."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arm) for arm in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple) or hint in (list, tuple):
        return "a list"
    if origin is dict or hint is dict or dataclasses.is_dataclass(hint):
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
