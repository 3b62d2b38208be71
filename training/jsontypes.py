"""Dataclasses from parsed JSON, checked against their type hints: the types are the schema.

``from_json(cls, data, source)`` builds dataclass ``cls`` from ``data`` (what ``json.loads``
returned), checking every field against its annotation. It knows ``bool``, ``int``, ``float`` (an
int is taken, as JSON writes ``1.0`` as ``1`` in other tools), ``str``, ``None``, ``Literal[...]``,
unions (``X | None``), ``tuple[X, ...]`` (from a list), ``list[X]``, ``dict[str, X]``, ``Any`` and
nested dataclasses. A field with a default may be absent; a key that is no field is an error
unless ``unknown="ignore"``. Any mismatch raises ``JSONTypeError`` with one line that names the
source and the field::

    config.json: 'dataset' must be one of 'mnist', 'mnist-5k', 'fashion-mnist', 'auto'; got ['x']
    summary.json: 'evaluation.per_class' must be an integer; got 2.5

``dataclasses.asdict`` writes what this reads back.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Unknown = Literal["error", "ignore"]


class JSONTypeError(ValueError):
    """JSON that does not fit a dataclass; the message is one line naming the source and field."""


def from_json(cls: type[T], data: Any, source: str = "JSON", *, unknown: Unknown = "error") -> T:
    """Dataclass `cls` from parsed JSON `data` (see the module docstring); JSONTypeError naming
    `source` (a file name, say) and the field when `data` does not fit its type hints."""
    return _dataclass(cls, data, source, "", unknown)


def _dataclass(cls: type[T], data: Any, source: str, path: str, unknown: Unknown) -> T:
    if not isinstance(data, dict):
        where = f"{path!r} must be" if path else "must be"
        raise JSONTypeError(f"{source}: {where} a JSON object; got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    strays = [k for k in data if k not in names]
    if strays and unknown == "error":
        raise JSONTypeError(
            f"{source}: {_join(path, strays[0])!r} is not a field of {cls.__name__}"
        )
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in data:
            raise JSONTypeError(f"{source}: {_join(path, f.name)!r} is missing")
    values = {
        f.name: _value(hints[f.name], data[f.name], source, _join(path, f.name), unknown)
        for f in fields
        if f.name in data
    }
    return cls(**values)


def _value(hint: Any, value: Any, source: str, path: str, unknown: Unknown) -> Any:
    """`value` checked against `hint` (lists made tuples, ints made floats where the hint says)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, source, path, unknown)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _value(arm, value, source, path, unknown)
            except JSONTypeError:
                if dataclasses.is_dataclass(arm) and isinstance(value, dict):
                    raise  # an object meant as that dataclass: its own error says more
        raise _mismatch(source, path, hint, value)
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _mismatch(source, path, hint, value)
    if origin is tuple and args[-1:] != (...,):
        raise TypeError(f"jsontypes reads tuple[X, ...], not {hint} (field {path!r})")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _mismatch(source, path, hint, value)
        items = [_value(args[0], v, source, f"{path}[{i}]", unknown) for i, v in enumerate(value)]
        return origin(items)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _mismatch(source, path, hint, value)
        return {k: _value(args[1], v, source, _join(path, k), unknown) for k, v in value.items()}
    if hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint in (bool, str):
        if isinstance(value, hint):
            return value
    else:
        raise TypeError(f"jsontypes cannot check {hint!r} (field {path!r})")
    raise _mismatch(source, path, hint, value)


def describe(hint: Any) -> str:
    """What a value of type `hint` is, in words: "an integer or null", "one of 'a', 'b'"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arm) for arm in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (tuple, list):
        return f"a list of {_plural(describe(args[0]))}"
    if origin is dict:
        return "a JSON object"
    if dataclasses.is_dataclass(hint):
        return "a JSON object"
    names = {
        type(None): "null",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Any: "any value",
    }
    return names.get(hint, str(hint))


def _plural(words: str) -> str:
    for article in ("an ", "a "):
        if words.startswith(article):
            return words[len(article) :] + "s"
    return words


def _mismatch(source: str, path: str, hint: Any, value: Any) -> JSONTypeError:
    return JSONTypeError(f"{source}: {path!r} must be {describe(hint)}; got {_show(value)}")


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
