"""Sampling backends by name. Each entry is a "module:attr" string imported only when used, so
`samplers` never imports `training` (the MNIST backend is a plugin living there)."""
from __future__ import annotations

import importlib
from functools import reduce
from typing import Any

from .base import Backend, BackendUnavailable

BACKENDS: dict[str, str] = {
    "deepfloyd": "samplers.backends.deepfloyd:DeepFloydBackend.from_pretrained",
    "mnist": "training.backend:MnistBackend",
}


def register_backend(name: str, target: str) -> None:
    """Add or replace a backend: `target` is "module:attr" (attr may be dotted) of a callable
    returning a `Backend`."""
    if ":" not in target:
        raise ValueError(f"backend target must look like 'module:attr', got {target!r}")
    BACKENDS[name] = target


def load_backend(name: str, **kwargs: Any) -> Backend:
    """Build the backend `name` with its own keyword arguments (e.g. deepfloyd: model=, device=;
    mnist: run_dir=, checkpoint=, device=). Raises ValueError for an unknown name and
    BackendUnavailable when its module cannot be imported."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    module_name, attr = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise BackendUnavailable(
            f"backend {name!r} needs the module {module_name!r}, which cannot be imported: {err}"
        ) from err
    return reduce(getattr, attr.split("."), module)(**kwargs)


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "load_backend", "register_backend"]
