"""Sampling backends by name. Each entry is a "module:attr" string imported only when used.

Packages above `samplers` add their own backends with `register_backend` when they are imported;
`samplers` never imports them itself except through `load_plugins`, which imports the packages
named in PLUGINS (and in $DIFFUSION_LAB_BACKEND_PLUGINS, comma-separated) once, so that
`python -m samplers --backend mnist` finds the MNIST backend that `training` registers.
"""
from __future__ import annotations

import importlib
import os
from functools import reduce
from typing import Any

from .base import Backend, BackendUnavailable

BACKENDS: dict[str, str] = {
    "deepfloyd": "samplers.backends.deepfloyd:DeepFloydBackend.from_pretrained",
}
PLUGINS: tuple[str, ...] = ("training",)  # registers "mnist" (training/__init__.py)
PLUGINS_ENV = "DIFFUSION_LAB_BACKEND_PLUGINS"
_plugin_errors: dict[str, str] = {}
_plugins_loaded = False


def register_backend(name: str, target: str) -> None:
    """Add or replace a backend: `target` is "module:attr" (attr may be dotted) of a callable
    returning a `Backend`."""
    if ":" not in target:
        raise ValueError(f"backend target must look like 'module:attr', got {target!r}")
    BACKENDS[name] = target


def load_plugins() -> None:
    """Import each plugin package once (PLUGINS, then $DIFFUSION_LAB_BACKEND_PLUGINS); one that
    cannot be imported is skipped and its reason kept for load_backend's error."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    extra = [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]
    for package in (*PLUGINS, *extra):
        try:
            importlib.import_module(package)
        except ImportError as err:
            _plugin_errors[package] = str(err)


def available_backends() -> list[str]:
    """The names load_backend accepts, plugins loaded, sorted."""
    load_plugins()
    return sorted(BACKENDS)


def load_backend(name: str, **kwargs: Any) -> Backend:
    """Build the backend `name` with its own keyword arguments (e.g. deepfloyd: model=, device=;
    mnist: run_dir=, checkpoint=, device=). Raises ValueError for an unknown name and
    BackendUnavailable when its module cannot be imported."""
    if name not in BACKENDS:
        load_plugins()
    if name not in BACKENDS:
        skipped = "".join(f"; plugin {p!r} did not import: {e}" for p, e in _plugin_errors.items())
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}"
                         f"{skipped}")
    module_name, attr = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise BackendUnavailable(
            f"backend {name!r} needs the module {module_name!r}, which cannot be imported: {err}"
        ) from err
    return reduce(getattr, attr.split("."), module)(**kwargs)


__all__ = ["BACKENDS", "PLUGINS", "Backend", "BackendUnavailable", "available_backends",
           "load_backend", "load_plugins", "register_backend"]
