"""Checkpoints: `checkpoints/epoch-NNNN/{model.safetensors, [ema.safetensors], state.pt,
meta.json}`.

`epoch-NNNN` is written at the end of epoch NNNN; a run stopped mid-epoch (SIGTERM) writes
`epoch-NNNN-step-SSSSSSSS` (NNNN epochs complete, SSSSSSSS the step), which sorts between
`epoch-NNNN` and `epoch-(NNNN+1)`, so a resume starts from the newest either way, and which pruning
removes once a newer checkpoint exists.

A checkpoint is written into a hidden temporary folder (each file serialized in memory, written
and fsynced) and renamed into place, so a folder named `epoch-NNNN` is always complete; a failed
write removes its temporary folder and leaves the earlier checkpoints as they were. Weights are
safetensors (their header records the experiment); `state.pt` (optimizer, scheduler, step) loads
with `torch.load(weights_only=True)`, so a pickle that would run code is refused. No random state
is saved: every draw of training step s comes from a generator seeded with (seed, s), so a resume
needs none (the `rng` entry that checkpoints of earlier versions hold is ignored).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from samplers.app.files import replace_folder
from samplers.app.files import write_synced as _write  # one name, so tests can fail a write

from .jsontypes import JSONTypeError, from_json
from .untrusted import RunFileError, make_folder, read_json_object

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "epoch-"
_NAME = re.compile(r"epoch-(\d+)(?:-step-(\d+))?")


class CheckpointError(ValueError):
    """A missing, incomplete or unreadable checkpoint (message names the file and the reason)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only folder); earlier ones are intact."""


@dataclass
class Checkpoint:
    path: Path
    epoch: int  # the epoch number: NNNN of the folder's name (epochs complete)
    meta: dict[str, Any]

    @property
    def partial(self) -> bool:
        """Written mid-epoch (a stopped run), not at an epoch's end."""
        return _NAME.fullmatch(self.path.name).group(2) is not None

    @property
    def weights_file(self) -> Path:
        """The weights to sample with: the EMA when the run kept one."""
        return self.path / self.meta.get("sampling_weights", "model.safetensors")

    def check_experiment(self, experiment: str) -> None:
        """CheckpointError unless this checkpoint was written by a run of `experiment`."""
        own = self.meta.get("experiment", experiment)
        if own != experiment:
            raise CheckpointError(
                f"{self.path / 'meta.json'}: a checkpoint of {own!r}, but the run is {experiment!r}"
            )


def checkpoint_name(epoch: int, step: int | None = None) -> str:
    """`epoch-NNNN` (end of epoch NNNN), or with `step` the mid-epoch `epoch-NNNN-step-SSSSSSSS`."""
    return f"{_PREFIX}{epoch:04d}" + ("" if step is None else f"-step-{step:08d}")


def _order(path: Path) -> tuple[int, int]:
    m = _NAME.fullmatch(path.name)
    return int(m.group(1)), int(m.group(2) or -1)


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """Every checkpoint folder of a run, oldest first (temporary folders are skipped)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    return (
        sorted((p for p in root.glob(f"{_PREFIX}[0-9]*") if _NAME.fullmatch(p.name)), key=_order)
        if root.is_dir()
        else []
    )


@dataclass(frozen=True)
class _Meta:
    """The types of the meta.json fields the lab reads back (checked by jsontypes.from_json)."""

    experiment: str | None = None
    step: int | None = None
    loss: float | None = None
    arch: str | None = None
    hidden: int | None = None
    conditioning: str | None = None
    preview_s: float = 0.0
    sampling_weights: Literal["model.safetensors", "ema.safetensors"] = "model.safetensors"
    sha256: dict[str, str] = field(default_factory=dict)


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint in folder `path`; CheckpointError when its meta.json is missing or invalid
    (read as untrusted input: training.untrusted, its fields' types checked)."""
    try:
        meta = read_json_object(path, "meta.json")
        if meta is None:
            raise CheckpointError(f"{path / 'meta.json'}: missing (incomplete checkpoint)")
        from_json(_Meta, meta, unknown="ignore")
    except (RunFileError, JSONTypeError) as e:
        reason = e.reason if isinstance(e, RunFileError) else str(e)
        raise CheckpointError(f"{path / 'meta.json'}: unreadable ({reason})") from None
    return Checkpoint(path, _order(path)[0], meta)


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first (folders without a valid meta.json skipped)."""
    out = []
    for p in checkpoint_folders(run_dir):
        try:
            out.append(read_checkpoint(p))
        except CheckpointError:
            continue
    return out


def find_checkpoint(run_dir: str | Path, checkpoint: int | str | Path | None) -> Checkpoint:
    """The checkpoint to load: latest (None), an epoch number (its end-of-epoch checkpoint, not a
    mid-epoch one), a folder name or a folder path; CheckpointError naming the file when the one
    asked for is unreadable (never a silent fall-back to another)."""
    folders = checkpoint_folders(run_dir)
    if not folders:
        raise CheckpointError(f"{run_dir}: no complete checkpoint under {CHECKPOINT_DIR}/")
    if isinstance(checkpoint, str) and checkpoint.isdigit():  # "5" or "0005": an epoch number
        checkpoint = int(checkpoint)
    chosen = (
        folders[-1]
        if checkpoint is None
        else next(
            (
                p
                for p in folders
                if _order(p) == (checkpoint, -1)
                or checkpoint == p.name
                or Path(str(checkpoint)) == p
            ),
            None,
        )
    )
    if chosen is None:
        raise CheckpointError(
            f"{run_dir}: no checkpoint {checkpoint!r}; have {', '.join(p.name for p in folders)}"
        )
    try:
        return read_checkpoint(chosen)
    except CheckpointError as e:
        readable = [c.path.name for c in list_checkpoints(run_dir)]
        raise CheckpointError(
            f"{e}; readable checkpoints: {', '.join(readable) or 'none'}"
        ) from None


def latest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_checkpoint(
    run_dir: str | Path,
    epoch: int,
    *,
    model: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    step: int | None = None,
) -> Path:
    """Write checkpoint `epoch` (with `step`: the mid-epoch one, see checkpoint_name) atomically;
    returns its folder.

    CheckpointWriteError (an OSError) when the disk refuses a write; the temporary folder is
    removed and the earlier checkpoints are untouched.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(epoch, step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    header = {"experiment": str(meta["experiment"])} if "experiment" in meta else None
    try:
        make_folder(root)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files = {"model.safetensors": safetensors_bytes(_contiguous(model), header)}
        meta = {**meta, "epoch": epoch, "sampling_weights": "model.safetensors"}
        if ema is not None:
            files["ema.safetensors"] = safetensors_bytes(_contiguous(ema), header)
            meta["sampling_weights"] = "ema.safetensors"
        buf = io.BytesIO()
        torch.save(state, buf)
        files["state.pt"] = buf.getvalue()
        meta["sha256"] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        for name, data in files.items():
            _write(tmp / name, data)
        _write(tmp / "meta.json", json.dumps(meta, indent=2).encode())
        replace_folder(tmp, final)  # over a checkpoint of the same epoch from an earlier attempt
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        error = CheckpointWriteError(
            f"cannot write checkpoint {final.name} into {root}: "
            f"{e.strerror or e}; the earlier checkpoints are intact"
        )
        error.errno = e.errno
        raise error from e
    return final


def verify_checksums(ckpt: Checkpoint, names: tuple[str, ...] | None = None) -> None:
    """CheckpointError naming the first file (of `names`, default all) whose bytes do not match the
    sha256 recorded in meta.json at save time (bit rot, a partial copy, a file swapped in)."""
    recorded = ckpt.meta.get("sha256") or {}
    for name in names or tuple(recorded):
        path = ckpt.path / name
        if name not in recorded:
            continue
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != recorded[name]:
            raise CheckpointError(
                f"{path}: corrupted (its bytes do not match the sha256 "
                f"recorded in meta.json when it was saved)"
            )


def prune_checkpoints(run_dir: str | Path, keep: int, milestones: tuple[int, ...]) -> None:
    """Delete all but the last `keep` end-of-epoch checkpoints and the milestone epochs, and every
    mid-epoch checkpoint but the newest checkpoint; drop stale temp folders."""
    root = Path(run_dir) / CHECKPOINT_DIR
    ckpts = list_checkpoints(run_dir)
    ends = [c for c in ckpts if not c.partial]
    for c in ends[:-keep] if keep > 0 else ends:
        if c.epoch not in milestones:
            shutil.rmtree(c.path, ignore_errors=True)
    for c in ckpts[:-1]:
        if c.partial:
            shutil.rmtree(c.path, ignore_errors=True)
    for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")] if root.is_dir() else []:
        if not stale.name.endswith(f"-{os.getpid()}"):  # left by a killed process
            shutil.rmtree(stale, ignore_errors=True)


def load_weights(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    experiment: str | None = None,
    expected: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A safetensors state dict; CheckpointError naming the file when it is missing, corrupt,
    written by another `experiment` (its header says so), or (with `expected`, a model's state
    dict) missing keys, holding extra ones or tensors of other shapes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            written_by = (f.metadata() or {}).get("experiment")
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if experiment is not None and written_by is not None and written_by != experiment:
        raise CheckpointError(f"{path}: weights of a {written_by!r} run, not of {experiment!r}")
    if expected is not None:
        check_shapes(path, weights, expected)
    return weights


def check_shapes(
    path: Path, weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    """CheckpointError naming `path` unless `weights` has exactly the keys and shapes of
    `expected`."""
    missing, extra = (
        sorted(expected.keys() - weights.keys()),
        sorted(weights.keys() - expected.keys()),
    )
    bad = [
        f"{k} {tuple(weights[k].shape)} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    problems = (
        ([f"missing {', '.join(missing[:3])}"] if missing else [])
        + ([f"unexpected {', '.join(extra[:3])}"] if extra else [])
        + bad[:3]
    )
    if problems:
        raise CheckpointError(f"{path}: does not fit the run's model: {'; '.join(problems)}")


STATE_KEYS = ("optimizer", "scheduler", "step")


def load_state(ckpt: Checkpoint, device: str | torch.device = "cpu") -> dict[str, Any]:
    """`state.pt` of a checkpoint (optimizer, scheduler, step), loaded with weights_only.

    A file that is truncated, is not a torch file, holds a pickle that would run code, or lacks one
    of STATE_KEYS raises CheckpointError naming it."""
    path = ckpt.path / "state.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: training state file not found")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path}: cannot load training state ({e})") from e
        why = [line for line in str(e).splitlines() if "GLOBAL" in line] or ["a disallowed object"]
        raise CheckpointError(
            f"{path}: refused to load: the pickle asks to run code or build "
            f"objects other than tensors ({why[0].strip()}); nothing was executed"
        ) from e
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"{path}: cannot load training state ({e})") from e
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training state (missing {', '.join(missing)})")
    return state
