"""Dataclasses from parsed JSON, checked against their type hints: the types are the schema.

One checker for every typed JSON file of the lab (config.json, options files, summary.json, job
files, meta.json, the job queue). ``from_json(cls, data, source)`` builds dataclass ``cls`` from
``data`` (what ``json.loads`` returned), checking every field against its annotation. It knows
``bool``, ``int`` (not a bool), ``float`` (an int too: JSON writes ``1.0`` as ``1`` in other
tools), ``str``, ``None``, ``Path`` (a string), ``Literal[...]``, unions (``X | None``),
``tuple[X, ...]`` and ``tuple[X, Y]`` (from a list), ``list[X]``, ``dict[str, X]``, bare
``list`` / ``tuple`` / ``dict``, ``Any`` and nested dataclasses. A field with a default may be
absent; a key that is no field is an error unless ``unknown="ignore"`` (a file that holds more
than the dataclass reads back). Any mismatch raises ``JSONTypeError`` with one line that names
the source (when given), the innermost field, and shows the value as JSON::

    config.json: 'dataset' must be one of "auto", "mnist", "mnist-5k"; got ["x"]
    summary.json: 'process.pid' must be an integer; got "x"

``dataclasses.asdict`` writes what this reads back.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Unknown = Literal["error", "ignore"]


class JSONTypeError(ValueError):
    """JSON that does not fit a dataclass; the message is one line naming the source and field."""


def from_json(
    cls: type[T], data: Any, source: str = "", *, path: str = "", unknown: Unknown = "error"
) -> T:
    """Dataclass `cls` from parsed JSON `data` (see the module docstring); JSONTypeError naming
    `source` (a file name, say; "": none) and the field when `data` does not fit its type hints.
    `path` names `data` itself within its file (a nested object: "plan")."""
    return _dataclass(cls, data, source, path, unknown)


def _dataclass(cls: type[T], data: Any, source: str, path: str, unknown: Unknown) -> T:
    if not isinstance(data, dict):
        raise _mismatch(source, path, cls, data)
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    names = {f.name for f in fields}
    strays = [k for k in data if k not in names]
    if strays and unknown == "error":
        message = f"'{_join(path, strays[0])}' is not a field of {cls.__name__}"
        raise JSONTypeError(at(source, message))
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in data:
            raise JSONTypeError(at(source, f"'{_join(path, f.name)}' is missing"))
    values = {
        f.name: _value(hints[f.name], data[f.name], source, _join(path, f.name), unknown)
        for f in fields
        if f.name in data
    }
    return cls(**values)


def _value(hint: Any, value: Any, source: str, path: str, unknown: Unknown) -> Any:
    """`value` checked against `hint` (lists made tuples, ints made floats, strings made Paths
    where the hint says)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, source, path, unknown)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in args:
            try:
                return _value(arm, value, source, path, unknown)
            except JSONTypeError as e:
                container = _container(arm)
                if container is not None and isinstance(value, container):
                    errors.append(e)  # the value is that arm's kind of container: its error
                    #                   names the innermost field that does not fit
        if errors:
            raise errors[0]
        raise _mismatch(source, path, hint, value)
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _mismatch(source, path, hint, value)
    if hint in (list, tuple, dict):
        bare = {list: list[Any], tuple: tuple[Any, ...], dict: dict[str, Any]}[hint]
        return _value(bare, value, source, path, unknown)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):  # a tuple: what asdict gives (validate)
            raise _mismatch(source, path, hint, value)
        if origin is tuple and args[-1:] != (...,):  # tuple[X, Y]: that many items
            if len(value) != len(args):
                raise _mismatch(source, path, hint, value)
            arms = args
        else:
            arms = (args[0],) * len(value)
        items = [
            _value(arm, v, source, f"{path}[{i}]", unknown)
            for i, (arm, v) in enumerate(zip(arms, value, strict=True))
        ]
        return origin(items)
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"JSON object keys are strings, not {args[0]} (field {path!r})")
        if not isinstance(value, dict):
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
    elif hint is Path:
        if isinstance(value, str):
            return Path(value)
    else:
        raise TypeError(f"jsontypes cannot check {hint!r} (field {path!r})")
    raise _mismatch(source, path, hint, value)


def describe(hint: Any) -> str:
    """What a value of type `hint` is, in words: "an integer or null", 'one of "a", "b"'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arm) for arm in args)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is tuple and args and args[-1] is not ...:
        return f"a list of {len(args)} items"
    if origin in (tuple, list) and args[0] is not Any:
        return f"a list of {_plural(describe(args[0]))}"
    if origin in (tuple, list) or hint in (list, tuple):
        return "a list"
    if origin is dict or hint is dict or dataclasses.is_dataclass(hint):
        return "a JSON object"
    names = {
        type(None): "null",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path (a string)",
        Any: "any value",
    }
    return names.get(hint, str(hint))


def _container(hint: Any) -> type | None:
    """The JSON container a value of `hint` is (dict, list), None for a scalar."""
    origin = typing.get_origin(hint) or hint
    if origin is dict or dataclasses.is_dataclass(hint):
        return dict
    return list if origin in (list, tuple) else None


def _plural(words: str) -> str:
    for article in ("an ", "a "):
        if words.startswith(article):
            return words[len(article) :] + "s"
    return words


def _mismatch(source: str, path: str, hint: Any, value: Any) -> JSONTypeError:
    where = f"'{path}' must be" if path else "must be"
    return JSONTypeError(at(source, f"{where} {describe(hint)}; got {_show(value)}"))


def _show(value: Any, limit: int = 60) -> str:
    """`value` as JSON, cut to `limit` characters."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def at(source: str, message: str) -> str:
    """`message` prefixed with the `source` it is about ("config.json: ..."), when there is one."""
    return f"{source}: {message}" if source else message
