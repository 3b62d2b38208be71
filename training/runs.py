"""Reading (and safely naming) run directories: `runs/<name>/` as docs/run-record.md describes.

config.json     the run's options and, under "plan", what was resolved at its start
                (training.config.RunConfig)
metrics.jsonl   one object per logged step: step, epoch (the epoch the step is in), time,
                loss, lr, images_per_s, loss_t_bin (10 values, null where a bin was empty)
checkpoints/    epoch-NNNN/{model.safetensors, [ema.safetensors], state.pt, meta.json}
samples/        epoch-NNNN.png per epoch, sampling.gif at the end
figures/        course deliverables (training.figures)
summary.json    status running|finished|failed|stopped, epoch, step, wall_time_s, final_loss,
                wandb {mode, project, id, url, dir, sync_command}, evaluation {...},
                process {pid, started, host} of the training process (process_alive)
wandb/          the W&B run files (offline runs: upload with the summary's sync_command)
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samplers.app.files import write_text_atomic

from .checkpoints import Checkpoint, list_checkpoints
from .config import ConfigError, RunConfig

__all__ = [
    "RunFileError",
    "RunInfo",
    "list_runs",
    "load_run_config",
    "read_config",
    "read_metrics",
    "read_summary",
    "list_checkpoints",
    "safe_run_dir",
    "write_json",
    "process_identity",
    "process_alive",
    "sample_grid_path",
    "list_sample_grids",
    "check_runs_folder",
]


@dataclass
class RunInfo:
    name: str
    path: Path
    experiment: str
    dataset: str
    scheduler: bool
    status: str  # "running" | "finished" | "stopped" | "failed" | "unknown"
    epoch: float | None
    step: int | None
    total_steps: int | None
    final_loss: float | None
    wall_time_s: float | None
    num_checkpoints: int
    created: float  # config.json mtime (seconds since the epoch)


def safe_run_dir(runs_dir: str | Path, name: str) -> Path:
    """runs_dir / name, refusing names that are empty, hidden (leading '.'), absolute, hold a
    path separator or control character, or leave runs_dir through a symlink (ConfigError)."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name.startswith(".")
        or Path(name).is_absolute()
        or "\\" in name
        or any(ord(ch) < 32 for ch in name)
    ):
        raise ConfigError(
            f"invalid run name {name!r}: use a plain folder name inside the runs folder"
        )
    root = Path(runs_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ConfigError(
            f"invalid run name {name!r}: it must stay inside {runs_dir} "
            f"(no '/', '..' or symlink out of it)"
        )
    return path


def _is_run(folder: Path) -> bool:
    """Whether `folder` holds a run record: config.json and summary.json or checkpoints/."""
    return (folder / "config.json").is_file() and (
        (folder / "summary.json").is_file() or (folder / "checkpoints").is_dir()
    )


def check_runs_folder(runs_dir: str | Path) -> None:
    """ConfigError when `runs_dir` cannot take a new run: it is a file, is a run's own folder or
    one inside it, or its nearest existing folder is not writable (it is created on first use)."""
    root = Path(runs_dir).resolve()
    for folder in (root, root.parent):
        if _is_run(folder):
            raise ConfigError(
                f"the runs folder {runs_dir} is inside the run {folder.name!r}; "
                f"use the folder that holds the runs ({folder.parent})"
            )
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"the runs folder {runs_dir} is not a folder ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"the runs folder {runs_dir} cannot be written ({existing} is read-only here)"
        )


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """{pid, started, host} of a process (default: this one): `started` is its start time, so a
    later process given the same pid is told apart."""
    import psutil  # a dependency of wandb

    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "started": psutil.Process(pid).create_time(), "host": socket.gethostname()}


def process_alive(identity: dict[str, Any] | None) -> bool | None:
    """Whether the process `identity` names still runs: None when it cannot be told (no identity,
    or one from another host), False when its pid is gone, a zombie, or now another process."""
    import psutil

    if not identity or identity.get("host") != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(identity["pid"]))
        return (
            abs(proc.create_time() - float(identity["started"])) < 0.01
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON write (write_text_atomic)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


class RunFileError(ValueError):
    """A run file (config.json, summary.json) that is not what the lab writes: not JSON, not an
    object, or a config without the fields every run has."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise RunFileError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise RunFileError(f"{path}: not a JSON object")
    return obj


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json as a dict ({} when absent)."""
    return _read_json(Path(run_dir) / "config.json")


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig (options and plan) of a run folder; FileNotFoundError when it has no
    config.json, RunFileError when that is not a run config."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    try:
        return RunConfig.from_json(read_config(run_dir), str(path))
    except ConfigError as e:
        raise RunFileError(str(e)) from None


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json as a dict ({} when absent)."""
    return _read_json(Path(run_dir) / "summary.json")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows in order; a partially written (or otherwise unparsable) line is
    skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def run_info(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    cfg, summary = read_config(run_dir), read_summary(run_dir)
    plan = cfg.get("plan") or cfg  # config.json before the plan: its fields beside the options
    ckpts: list[Checkpoint] = list_checkpoints(run_dir)
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        experiment=cfg.get("experiment", "?"),
        dataset=plan.get("dataset", "?"),
        scheduler=bool(cfg.get("scheduler", True)),
        status=summary.get("status", "unknown"),
        epoch=summary.get("epoch"),
        step=summary.get("step"),
        total_steps=plan.get("total_steps"),
        final_loss=summary.get("final_loss"),
        wall_time_s=summary.get("wall_time_s"),
        num_checkpoints=len(ckpts),
        created=(run_dir / "config.json").stat().st_mtime,
    )


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Every run (a folder with config.json) under runs_dir, newest first; unreadable ones
    skipped."""
    root = Path(runs_dir)
    infos = []
    for p in root.iterdir() if root.is_dir() else []:
        if (p / "config.json").is_file():
            try:
                infos.append(run_info(p))
            except (OSError, ValueError):
                continue
    return sorted(infos, key=lambda r: r.created, reverse=True)


def sample_grid_path(run_dir: Path, epoch: int) -> Path:
    """Where a run's end-of-epoch sample grid goes: samples/epoch-NNNN.png."""
    return Path(run_dir) / "samples" / f"epoch-{epoch:04d}.png"


def list_sample_grids(run_dir: Path) -> dict[int, Path]:
    """A run's end-of-epoch sample grids by epoch, oldest first (none: empty)."""
    found = {}
    for path in sorted((Path(run_dir) / "samples").glob("epoch-*.png")):
        if m := re.fullmatch(r"epoch-(\d+)\.png", path.name):
            found[int(m.group(1))] = path
    return found
