"""Checkpoints: `checkpoints/epoch-NNNN/{model.safetensors, [ema.safetensors], state.pt, meta.json}`.

A checkpoint is written into a hidden temporary folder and renamed into place, so a folder named
`epoch-NNNN` is always complete. Weights are safetensors; `state.pt` (optimizer, scheduler, RNG
states, step) loads with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "epoch-"


class CheckpointError(ValueError):
    """A missing, incomplete or unreadable checkpoint (message names the file and the reason)."""


@dataclass
class Checkpoint:
    path: Path
    period: int
    meta: dict[str, Any]

    @property
    def weights_file(self) -> Path:
        """The weights to sample with: the EMA when the run kept one."""
        return self.path / self.meta.get("sampling_weights", "model.safetensors")


def checkpoint_name(period: int) -> str:
    return f"{_PREFIX}{period:04d}"


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first (temporary folders are skipped)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    out = []
    for p in sorted(root.glob(f"{_PREFIX}[0-9]*")) if root.is_dir() else []:
        try:
            meta = json.loads((p / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        out.append(Checkpoint(p, int(p.name[len(_PREFIX):]), meta))
    return out


def latest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *map(float, np_state[2:])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_checkpoint(run_dir: str | Path, period: int, *, model: dict[str, torch.Tensor],
                    state: dict[str, Any], meta: dict[str, Any],
                    ema: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `period` atomically; returns its folder."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(period)
    tmp = root / f".tmp-{checkpoint_name(period)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_contiguous(model), str(tmp / "model.safetensors"))
    meta = {**meta, "period": period, "sampling_weights": "model.safetensors"}
    if ema is not None:
        save_file(_contiguous(ema), str(tmp / "ema.safetensors"))
        meta["sampling_weights"] = "ema.safetensors"
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if final.exists():  # a checkpoint of the same period from an earlier attempt
        old = root / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        shutil.rmtree(old)
    os.rename(tmp, final)
    return final


def prune_checkpoints(run_dir: str | Path, keep: int, milestones: tuple[int, ...]) -> None:
    """Delete all but the last `keep` checkpoints and the milestone periods; drop stale temp folders."""
    root = Path(run_dir) / CHECKPOINT_DIR
    ckpts = list_checkpoints(run_dir)
    for c in ckpts[:-keep] if keep > 0 else ckpts:
        if c.period not in milestones:
            shutil.rmtree(c.path, ignore_errors=True)
    for stale in root.glob(".tmp-*") if root.is_dir() else []:
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors state dict; CheckpointError naming the file when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def load_state(ckpt: Checkpoint, device: str | torch.device = "cpu") -> dict[str, Any]:
    """`state.pt` of a checkpoint (optimizer, scheduler, RNG, step), loaded with weights_only."""
    path = ckpt.path / "state.pt"
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign pickles
        raise CheckpointError(f"{path}: cannot load training state ({e})") from e
