"""The Sampler lab's backend: DeepFloyd IF, or a lab MNIST model.

DeepFloyd IF is built by samplers.app.backends.load_backend (it needs the diffusers stack and the
gated weights or a local copy), one loaded per process: asking for another backend releases it
(its GPU memory too). A failed load is remembered for RETRY_AFTER_S seconds, so a page does not
retry a slow probe on every rerun. An MNIST backend (training.backend.MnistBackend) wraps the
model the MNIST studio caches (dashboard.state): one copy of a checkpoint in memory, one lock.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import streamlit as st

from samplers.app.backends import BackendUnavailable, load_backend
from training.checkpoints import Checkpoint

from .state import Shared, lab_model

RETRY_AFTER_S = 600
_failures: dict[tuple, tuple[float, str]] = {}


def _release(shared: Shared) -> None:
    """Free a dropped backend's memory (switching backend keeps one in memory)."""
    with shared.lock:
        shared.value = None
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@st.cache_resource(max_entries=1, on_release=_release, show_spinner="Loading the backend...")
def _backend(name: str, options: tuple[tuple[str, Any], ...]) -> Shared:
    return Shared(load_backend(name, **dict(options)))


def backend(name: str, **options: Any) -> Shared:
    """The one loaded sampler backend; asking for another releases the previous one.

    Raises BackendUnavailable, remembered for RETRY_AFTER_S seconds, when it cannot load: any
    failure counts (no GPU, missing packages, no access to the weights, a corrupt checkpoint, out of
    memory), and its message is shown to the user.
    """
    key = (name, tuple(sorted(options.items())))
    failed = _failures.get(key)
    if failed and time.monotonic() - failed[0] < RETRY_AFTER_S:
        raise BackendUnavailable(failed[1])
    try:
        return _backend(*key)
    except Exception as e:  # noqa: BLE001 - an optional, hardware-bound backend: report, go on
        reason = str(e) or type(e).__name__
        _failures[key] = (time.monotonic(), reason)
        raise BackendUnavailable(reason) from e


def mnist_backend(run_dir: Path, ckpt: Checkpoint, device: str) -> Shared:
    """The MNIST backend on the studio's cached model of `ckpt` (the same LabModel, lock and
    memo); BackendUnavailable, with the reason, when it cannot load."""
    from training.backend import MnistBackend

    try:
        model = lab_model(run_dir, ckpt, device)
        return Shared(MnistBackend(lab=model.value), model.lock, model.memo)
    except (ValueError, OSError) as e:  # CheckpointError, RunFileError, DeviceUnavailable...
        raise BackendUnavailable(str(e) or type(e).__name__) from e


def examples(shared: Shared) -> dict[str, Any]:
    """The backend's example images, computed once per loaded backend (a ValueError, such as
    an absent dataset, is remembered too: it is raised again without another try)."""
    with shared.lock:
        if "examples" not in shared.memo:
            try:
                shared.memo["examples"] = shared.value.example_images()
            except ValueError as e:
                shared.memo["examples"] = e
        examples = shared.memo["examples"]
    if isinstance(examples, ValueError):
        raise ValueError(str(examples))
    return examples
