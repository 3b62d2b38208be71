"""The models the pages sample, shared by all sessions of the process: loaded once, used locked.

One cache for the MNIST studio and the Sampler lab's MNIST backend (dashboard.backends wraps the
same LabModel, lock and memo). A cached model is one object for all sessions; sampling mutates
nothing in it but the modules are not documented as reentrant, so every use holds `Shared.lock`
(sessions queue, each with its own torch.Generator). Keys include the checkpoint's mtime, so a
rewritten checkpoint is reloaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from training.checkpoints import Checkpoint


@dataclass
class Shared:
    """A process-wide model; hold `lock` while calling it."""

    value: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    memo: dict[str, Any] = field(default_factory=dict)  # values derived from `value`


def stamp(ckpt: Checkpoint) -> float:
    """The checkpoint's weights mtime: part of cache keys, so a rewritten checkpoint reloads."""
    try:
        return ckpt.weights_file.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(max_entries=6, show_spinner="Loading the model...")
def _lab_model(run_dir: str, checkpoint: str, stamp: float, device: str) -> Shared:
    from training.pretrained import load_lab_model

    return Shared(load_lab_model(run_dir, checkpoint, device))


def lab_model(run_dir: Path, ckpt: Checkpoint, device: str) -> Shared:
    """The run's LabModel at `ckpt` (raises FileNotFoundError / CheckpointError, not cached)."""
    return _lab_model(str(run_dir), ckpt.path.name, stamp(ckpt), device)
