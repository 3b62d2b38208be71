"""Sampling backends by name, found through the `diffusion_lab.backends` entry points.

A package offers a backend by naming a "module:attr" callable that returns a `Backend` in its
pyproject.toml (the lab's own: `deepfloyd` here, `mnist` in `training`); nothing is imported until
a backend is loaded, so listing the names costs no import. `register_backend` adds one at run time
(tests, notebooks).
"""

from __future__ import annotations

import importlib
from functools import reduce
from importlib.metadata import entry_points
from typing import Any

from .base import Backend, BackendUnavailable

ENTRY_POINT_GROUP = "diffusion_lab.backends"
_registered: dict[str, str] = {}


def register_backend(name: str, target: str) -> None:
    """Add or replace a backend for this process: `target` is "module:attr" (attr may be dotted)
    of a callable returning a `Backend`."""
    if ":" not in target:
        raise ValueError(f"backend target must look like 'module:attr', got {target!r}")
    _registered[name] = target


def backend_targets() -> dict[str, str]:
    """name -> "module:attr" of every backend: installed entry points, then registered ones."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **_registered}


def available_backends() -> list[str]:
    """The names load_backend accepts, sorted."""
    return sorted(backend_targets())


def load_backend(name: str, **kwargs: Any) -> Backend:
    """Build the backend `name` with its own keyword arguments (e.g. deepfloyd: model=, device=;
    mnist: run_dir=, checkpoint=, device=). Raises ValueError for an unknown name and
    BackendUnavailable when its module cannot be imported."""
    targets = backend_targets()
    if name not in targets:
        hint = "" if targets else " (none is installed: run `pip install -e .` in the lab's folder)"
        raise ValueError(
            f"unknown backend {name!r}; choose from {', '.join(sorted(targets))}{hint}"
        )
    module_name, attr = targets[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise BackendUnavailable(
            f"backend {name!r} needs the module {module_name!r}, which cannot be imported: {err}"
        ) from err
    return reduce(getattr, attr.split("."), module)(**kwargs)


__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BackendUnavailable",
    "available_backends",
    "backend_targets",
    "load_backend",
    "register_backend",
]
