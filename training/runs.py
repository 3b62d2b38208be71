"""The run record's one reader: `read_run(path) -> Run`, `list_runs(root)`, and the run status.

A run folder (`runs/<name>/`, docs/run-record.md) is read once into a typed `Run`: its config,
summary, status, checkpoints, sample grids and job files, metrics on demand. Every file is
untrusted input (training.untrusted): a file that cannot be read as the lab writes it never
raises here, it becomes the run's `problem` ("summary.json: 'process' must be a JSON object;
got \"x\""), and the rest of the run is read as far as it can be. The trainer, the CLIs and every
dashboard page read runs through this module, and decide what a run is doing with its one status
function (`decide_status`, documented there).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from samplers.app.files import write_text_atomic

from .checkpoints import Checkpoint as Checkpoint
from .checkpoints import CheckpointError, checkpoint_folders, read_checkpoint
from .config import ConfigError, RunConfig
from .jsontypes import JSONTypeError, from_json
from .runlock import Process, holder, process_identity
from .untrusted import (
    RunFileError,
    entry_kind,
    human_size,
    read_bytes,
    read_json_object,
    read_tail,
)

if TYPE_CHECKING:  # evaluation_record reads summary.json through this module
    from .evaluation_record import RunEvaluation

__all__ = [
    "BUSY",
    "JOB_FILES",
    "LOGS",
    "RESUMABLE",
    "Job",
    "Metrics",
    "Process",
    "Run",
    "RunFileError",
    "Status",
    "Summary",
    "WandbInfo",
    "check_run_dir",
    "check_runs_folder",
    "decide_status",
    "list_runs",
    "list_sample_grids",
    "load_metrics",
    "load_run_config",
    "process_identity",
    "read_config",
    "read_metrics",
    "read_run",
    "read_summary",
    "run_status",
    "safe_run_dir",
    "sample_grid_path",
    "write_json",
]

CONFIG, SUMMARY, METRICS = "config.json", "summary.json", "metrics.jsonl"
JOB_FILES = {"train": "job.json", "evaluate": "evaluate-job.json"}  # written by dashboard.jobs
LOGS = {"train": "train.log", "evaluate": "evaluate.log"}
RUN_FILES = (CONFIG, SUMMARY, *JOB_FILES.values())  # a folder holding any of them is a run
MAX_METRICS_BYTES = 16 * 2**20  # metrics.jsonl is read from its end up to this (~80,000 rows)
MAX_IMAGE_BYTES = 32 * 2**20  # a sample grid or GIF
STARTING_S = 600  # a launched process that has not claimed its run within this is not its trainer

Status = Literal[
    "starting",
    "running",
    "stopping",
    "closing",
    "finished",
    "stopped",
    "failed",
    "interrupted",
    "failed to start",
    "unreadable",
    "empty",
]
BUSY: tuple[Status, ...] = ("starting", "running", "stopping", "closing")  # a process is at it
RESUMABLE: tuple[Status, ...] = ("stopped", "interrupted", "failed")


# ----------------------------------------------------------------------------- the typed files
@dataclass(frozen=True)
class WandbInfo:
    """summary.json `wandb`: where W&B got the run (training.tracking)."""

    mode: str | None = None  # "online" | "offline" | "disabled"
    project: str | None = None
    id: str | None = None
    url: str | None = None  # online runs
    dir: str | None = None
    sync_command: str | None = None  # offline runs, or after a W&B failure
    error: str | None = None  # a W&B failure (training went on)


@dataclass(frozen=True)
class Summary:
    """summary.json (training.tracking writes it); every field None when there is none."""

    status: str | None = None  # as recorded: running | finished | stopped | failed
    epoch: int | float | None = None  # the epoch of `step` (a float in older runs)
    step: int | None = None
    wall_time_s: float | None = None
    final_loss: float | None = None
    error: str | None = None  # with status failed: what went wrong, one line
    wandb: WandbInfo | None = None
    process: Process | None = None  # the training process that wrote it
    evaluation: Any = None  # results of earlier labs (Run.evaluation reads them)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, without the fields that are None."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Job:
    """A process the dashboard started for a run, as job.json (evaluate-job.json) records it."""

    kind: Literal["train", "evaluate"]
    run_dir: Path
    argv: list[str]
    process: Process  # the training (evaluating) process
    started: float  # when it was launched (seconds since the epoch)
    stop_requested: float | None = None
    runner: Process | None = None  # dashboard.runner: waits for it, then starts the queue's next

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> Path:
        return self.run_dir / LOGS[self.kind]

    def alive(self) -> bool:
        return bool(self.process.alive())

    def save(self) -> None:
        write_json(
            self.run_dir / JOB_FILES[self.kind], {**asdict(self), "run_dir": str(self.run_dir)}
        )


class Metrics(NamedTuple):
    """metrics.jsonl: rows (one object a logged step; docs/run-record.md) and what was left out."""

    rows: list[dict[str, Any]]
    problem: str | None  # rows skipped (with the first reason), or only the file's end was read


# ----------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class Run:
    """One run folder as read at one moment (read_run); never raises for what the folder holds."""

    path: Path
    status: Status
    config: RunConfig | None = None  # options and plan; None: no config.json, or unreadable
    summary: Summary = Summary()
    checkpoints: tuple[Checkpoint, ...] = ()  # readable ones, oldest first
    skipped_checkpoints: tuple[str, ...] = ()  # folder names of unreadable ones (see problems)
    sample_grids: Mapping[int, Path] = field(default_factory=dict)  # epoch -> samples/epoch-N.png
    # evaluation.json (and what earlier labs kept in summary.json): training.evaluation_record
    evaluation: RunEvaluation = field(default_factory=lambda: _no_evaluation())
    job: Job | None = None  # job.json: the last training process the dashboard started
    evaluation_job: Job | None = None  # evaluate-job.json
    training: bool = False  # a process holds trainer.lock now
    trainer: Process | None = None  # that process, as it recorded itself
    problems: tuple[RunFileError, ...] = ()  # every file that could not be read, and why
    created: float = 0.0  # config.json's mtime (else the folder's): newest first in listings

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def problem(self) -> str | None:
        """What could not be read, for people ("summary.json: 'step' must be an integer, ...")."""
        return "; ".join(map(str, self.problems)) or None

    @property
    def experiment(self) -> str:
        return self.config.options.experiment if self.config is not None else "?"

    def require(self, *files: str) -> None:
        """RunFileError naming the full path of the first of `files` that could not be read, or
        FileNotFoundError when config.json is asked for and absent (a command's one-line error)."""
        for problem in self.problems:
            if problem.file in (*files, "."):
                raise problem.under(self.path)
        if CONFIG in files and self.config is None:
            raise FileNotFoundError(f"{self.path}: not a run directory (no {CONFIG})")

    def metrics(self) -> Metrics:
        """metrics.jsonl, read now (load_metrics)."""
        return load_metrics(self.path)

    def image(self, path: Path) -> bytes:
        """The bytes of one of the run's images (a sample grid); RunFileError when unreadable."""
        try:
            return read_bytes(self.path, str(path.relative_to(self.path)), MAX_IMAGE_BYTES)
        except FileNotFoundError:
            raise RunFileError(path.relative_to(self.path), "deleted") from None


def _no_evaluation() -> RunEvaluation:
    from .evaluation_record import RunEvaluation  # it reads summary.json through this module

    return RunEvaluation()


def decide_status(
    summary: Summary | None,
    *,
    has_config: bool,
    job: Job | None,
    training: bool,
    trainer: Process | None,
    now: float,
) -> Status:
    """The one status of a run, from what read_run found:

    `summary` (None: summary.json exists but cannot be read; Summary(): there is none), whether
    config.json exists, `job` (job.json), and `training` / `trainer`: whether a process holds the
    run's trainer.lock (training.runlock), and its recorded identity.

    While a process holds the lock (a trainer is alive):
      starting   its record is not its own yet: summary.json is absent, unreadable, or names
                 another process (an earlier attempt's record)
      stopping   the record says running and job.json asked this very process to stop
      running    the record says running
      closing    the record says finished, stopped or failed: the trainer is writing its last
    While no process holds it:
      closing    job.json names a live process that wrote the record and released the lock:
                 it is exiting (closing W&B)
      starting   job.json names a live process launched less than STARTING_S ago that has not
                 claimed the run yet (Python and torch are still loading)
      unreadable summary.json cannot be read (the run's problem says why)
      failed to start   job.json's process ended before writing any record (see train.log)
      interrupted       the record says running, or there is a config.json and no summary: the
                        trainer died (SIGKILL, power loss) and can be resumed
      empty      the folder holds no record at all
      finished, stopped, failed   as summary.json records (any other recorded word is shown as
                 is: a run pulled from W&B records its W&B state)
    """
    if training:
        if summary is None or summary.status is None:
            return "starting"
        if trainer is not None and summary.process is not None and summary.process != trainer:
            return "starting"
        if summary.status == "running":
            asked = job is not None and job.stop_requested and job.process == trainer
            return "stopping" if asked else "running"
        return "closing"
    if job is not None and job.alive():
        if summary is not None and summary.process == job.process:
            return "closing"  # its record is written and its lock released: it is exiting
        if now - job.process.started < STARTING_S:
            return "starting"
    if summary is None:
        return "unreadable"
    if summary.status is None:
        if has_config:
            return "interrupted"
        return "failed to start" if job is not None else "empty"
    if summary.status == "running":
        return "interrupted"
    return summary.status  # type: ignore[return-value]


def _read_config(path: Path) -> RunConfig | None:
    obj = read_json_object(path, CONFIG)
    if obj is None:
        return None
    try:
        return RunConfig.from_json(obj, source="")  # an old flat config.json: converted
    except ConfigError as e:
        raise RunFileError(CONFIG, str(e)) from None


def _typed(cls: type, path: Path, name: str, **given: Any) -> Any:
    """File `name` of run folder `path` as dataclass `cls`, with the fields `given` set over
    what the file says (None when the file is absent)."""
    obj = read_json_object(path, name)
    if obj is None:
        return None
    try:
        return from_json(cls, {**obj, **given}, unknown="ignore")
    except JSONTypeError as e:
        raise RunFileError(name, str(e)) from None


def _read_summary(path: Path) -> Summary:
    return _typed(Summary, path, SUMMARY) or Summary()


def _read_job(path: Path, kind: str) -> Job | None:
    # its kind is its file's, its run the folder it lies in, whatever it says
    return _typed(Job, path, JOB_FILES[kind], kind=kind, run_dir=str(path))


def _read_checkpoints(path: Path) -> tuple[list[Checkpoint], list[str], list[RunFileError]]:
    kind = entry_kind(path, "checkpoints")
    if kind is None:
        return [], [], []
    if kind != "folder":
        return [], [], [RunFileError("checkpoints", f"a {kind}, not a folder (not followed)")]
    found, skipped, problems = [], [], []
    for folder in checkpoint_folders(path):
        relative = f"checkpoints/{folder.name}"
        if entry_kind(path, relative) != "folder":
            skipped.append(folder.name)
            problems.append(RunFileError(relative, "a symlink or a file, not a folder"))
            continue
        try:
            found.append(read_checkpoint(folder))
        except CheckpointError as e:
            skipped.append(folder.name)
            problems.append(RunFileError(relative, str(e).replace(f"{folder}/", "")))
    return found, skipped, problems


def _model_mismatch(config: RunConfig, checkpoints: list[Checkpoint]) -> RunFileError | None:
    """A config.json whose model is not the one its checkpoints were written with (meta.json
    records arch, hidden and conditioning): an edit that would build the wrong model, or one
    too large to allocate."""
    options = config.options
    for ckpt in checkpoints:
        written = {k: ckpt.meta.get(k) for k in ("arch", "hidden", "conditioning")}
        differ = [k for k, v in written.items() if v is not None and getattr(options, k) != v]
        if differ:
            said = ", ".join(f"{k}={getattr(options, k)!r}" for k in differ)
            wrote = ", ".join(f"{k}={written[k]!r}" for k in differ)
            return RunFileError(
                CONFIG, f"{said}, but checkpoint {ckpt.path.name} was written with {wrote}"
            )
    return None


def read_run(path: str | Path) -> Run:
    """Read the run folder `path` once: every file checked, every failure a problem of the run
    (Run.problems), its status decided (decide_status). Never raises for what the folder holds."""
    path = Path(path)
    problems: list[RunFileError] = []

    def attempt(fn, *args):
        try:
            return fn(*args)
        except RunFileError as e:
            problems.append(e)
        except OSError as e:  # a folder that cannot be listed, a file gone meanwhile
            problems.append(RunFileError(".", f"cannot be read ({e.strerror or e})"))
        return None

    kind = entry_kind(path.parent, path.name)
    if kind != "folder":
        reason = "no such run folder" if kind is None else f"a {kind}, not a run folder"
        problem = RunFileError(".", reason + (" (not followed)" if kind == "symlink" else ""))
        return Run(path, "empty", problems=(problem,))
    if not os.access(path, os.R_OK | os.X_OK):
        return Run(path, "empty", problems=(RunFileError(".", "the folder cannot be read"),))
    config = attempt(_read_config, path)
    summary = attempt(_read_summary, path)
    job = attempt(_read_job, path, "train")
    evaluation_job = attempt(_read_job, path, "evaluate")
    read = attempt(_read_checkpoints, path) or ([], [], [])
    checkpoints, skipped, checkpoint_problems = read
    problems += checkpoint_problems
    if config is not None and (mismatch := _model_mismatch(config, checkpoints)):
        problems.append(mismatch)
        config = None  # a config that does not describe its own weights is not used
    from .evaluation_record import read_evaluation  # it reads summary.json through this module

    evaluation = read_evaluation(path)
    known = {str(p.under(path)) for p in problems}  # a bad summary.json: said once
    problems += [RunFileError(p) for p in evaluation.problems if p not in known]
    training, trainer = holder(path)
    status = decide_status(
        summary,
        has_config=entry_kind(path, CONFIG) is not None,
        job=job,
        training=training,
        trainer=trainer,
        now=time.time(),
    )
    created = 0.0
    for dated in (path / CONFIG, path):
        with contextlib.suppress(OSError):
            created = os.lstat(dated).st_mtime
            break
    return Run(
        path,
        status,
        config,
        summary or Summary(),
        tuple(checkpoints),
        tuple(skipped),
        list_sample_grids(path),
        evaluation,
        job,
        evaluation_job,
        training,
        trainer,
        tuple(problems),
        created,
    )


def run_status(path: str | Path) -> Status:
    """The status of the run folder `path` now (read_run(path).status)."""
    return read_run(path).status


def _holds_a_record(folder: os.DirEntry) -> bool | None:
    """Whether a folder holds one of RUN_FILES (None: it cannot be listed)."""
    try:
        with os.scandir(folder.path) as entries:
            return any(e.name in RUN_FILES for e in entries)
    except OSError:
        return None


def list_runs(root: str | Path) -> list[Run]:
    """Every run folder directly under `root` (a folder holding config.json, summary.json or a
    job file, or one that cannot be listed, or a symlink where a run folder would be), newest
    first; a run that cannot be read is listed with its problem, never left out."""
    root = Path(root)
    try:
        with os.scandir(root) as it:
            entries = [e for e in it if not e.name.startswith(".")]
    except OSError:
        return []
    runs = []
    for entry in entries:
        try:
            is_link, is_dir = entry.is_symlink(), entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if (is_link and Path(entry.path).is_dir()) or (
            is_dir and _holds_a_record(entry) is not False
        ):
            runs.append(read_run(root / entry.name))
    return sorted(runs, key=lambda r: r.created, reverse=True)


# ----------------------------------------------------------------------------- metrics
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bad_row(row: Any) -> str | None:
    """Why a metrics.jsonl row is not one the trainer writes (None: it is). Checked here rather
    than with jsontypes.from_json: a long run's log has 10^5 rows, read on every refresh."""
    import json

    if not isinstance(row, dict):
        return "not an object"
    if not isinstance(row.get("step"), int) or isinstance(row["step"], bool):
        return f"'step' must be an integer; got {json.dumps(row.get('step'))[:40]}"
    for key in ("epoch", "time", "loss", "lr", "images_per_s"):
        value = row.get(key)
        if value is not None and not _is_number(value):
            return f"'{key}' must be a number; got {json.dumps(value)[:40]}"
    bins = row.get("loss_t_bin")
    if bins is not None and not (
        isinstance(bins, list) and all(v is None or _is_number(v) for v in bins)
    ):
        return "'loss_t_bin' must be a list of numbers or nulls"
    return None


def load_metrics(run_dir: str | Path) -> Metrics:
    """metrics.jsonl rows in order (at most its last MAX_METRICS_BYTES); a row that is not what the
    trainer writes (cut short by a crash, or wrong-typed) is left out and counted in `problem`."""
    import json

    try:
        data, cut = read_tail(Path(run_dir), METRICS, MAX_METRICS_BYTES)
    except FileNotFoundError:
        return Metrics([], None)
    except RunFileError as e:
        return Metrics([], str(e))
    rows, skipped, first = [], 0, None
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            why = _bad_row(row)
        except (ValueError, RecursionError):
            why = "not valid JSON" if number < len(lines) else None  # the last: being written
            if why is None:
                continue
        if why is None:
            rows.append(row)
        else:
            skipped += 1
            first = first or f"line {number}: {why}"
    notes = []
    if cut:
        notes.append(f"longer than {human_size(MAX_METRICS_BYTES)}: only its end was read")
    if skipped:
        notes.append(f"{skipped} row{'s' * (skipped > 1)} left out ({first})")
    return Metrics(rows, f"{METRICS}: {'; '.join(notes)}" if notes else None)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of load_metrics (those the trainer writes), in order."""
    return load_metrics(run_dir).rows


# ----------------------------------------------------------------------------- one file each
def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json as its JSON object ({} when absent; RunFileError naming its full path when it
    cannot be read). Commands and pages use read_run; this is for writers and tests."""
    try:
        return read_json_object(Path(run_dir), CONFIG) or {}
    except RunFileError as e:
        raise e.under(Path(run_dir)) from None


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig (options and plan) of a run folder; FileNotFoundError when it has no
    config.json, RunFileError naming its full path when that cannot be read as a run config."""
    run_dir = Path(run_dir)
    try:
        config = _read_config(run_dir)
    except RunFileError as e:
        raise e.under(run_dir) from None
    except FileNotFoundError:
        config = None
    except OSError as e:
        raise RunFileError(run_dir / CONFIG, f"cannot be read ({e.strerror or e})") from None
    if config is None:
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {CONFIG})")
    return config


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json as its JSON object, checked as read_run checks it ({} when absent;
    RunFileError naming its full path). For its writer (training.tracking) and tests."""
    run_dir = Path(run_dir)
    try:
        _read_summary(run_dir)
        return read_json_object(run_dir, SUMMARY) or {}
    except RunFileError as e:
        raise e.under(run_dir) from None


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON write (write_text_atomic: a symlink at `path` is replaced, never followed)."""
    import json

    write_text_atomic(path, json.dumps(obj, indent=2, default=str))


# ----------------------------------------------------------------------------- names and starts
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
    return (folder / CONFIG).is_file() and (
        (folder / SUMMARY).is_file() or (folder / "checkpoints").is_dir()
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


def check_run_dir(run_dir: Path, resume: bool) -> list[Path]:
    """What a trainer may start from in `run_dir`, checked once it holds the run's claim
    (training.runlock.claim_run: no other trainer) and before it writes anything: the checkpoint
    folders a resume tries, newest first (empty: it starts at step 0: a fresh run, or a resumed
    run killed before its first checkpoint). ConfigError when a fresh run's name is taken, there
    is no run to resume or none of its checkpoints holds its config's model, RunFileError naming
    the file when its config or summary cannot be read."""
    if not resume:
        if entry_kind(run_dir, CONFIG) is not None:
            raise ConfigError(
                f"run {run_dir.name!r} already exists in {run_dir.parent}; pass --resume "
                f"to continue it, or --name to start a new run"
            )
        check_runs_folder(run_dir.parent)
        return []
    run = read_run(run_dir)
    if entry_kind(run_dir, CONFIG) is None:
        raise ConfigError(f"--resume: there is no run {run_dir.name!r} in {run_dir.parent}")
    run.require(CONFIG, SUMMARY)
    from .pretrained import weights_fit  # builds models: imported when a resume needs it

    folders = checkpoint_folders(run_dir)[::-1]
    assert run.config is not None  # require(CONFIG) said so
    cfg = run.config.options
    if folders and not any(weights_fit(cfg, f / "model.safetensors") for f in folders):
        raise ConfigError(
            f"--resume: no checkpoint of run {run_dir.name!r} holds the model its config.json "
            f"describes (arch={cfg.arch}, hidden={cfg.hidden}, conditioning={cfg.conditioning})"
        )
    return folders


# ----------------------------------------------------------------------------- samples
def sample_grid_path(run_dir: Path, epoch: int) -> Path:
    """Where a run's end-of-epoch sample grid goes: samples/epoch-NNNN.png."""
    return Path(run_dir) / "samples" / f"epoch-{epoch:04d}.png"


def list_sample_grids(run_dir: Path) -> dict[int, Path]:
    """A run's end-of-epoch sample grids (regular files) by epoch, oldest first."""
    folder = Path(run_dir) / "samples"
    if entry_kind(Path(run_dir), "samples") != "folder":
        return {}
    found = {}
    try:
        with os.scandir(folder) as entries:
            names = sorted(
                e.name for e in entries if stat.S_ISREG(e.stat(follow_symlinks=False).st_mode)
            )
    except OSError:
        return {}
    for name in names:
        if m := re.fullmatch(r"epoch-(\d+)\.png", name):
            found[int(m.group(1))] = folder / name
    return found
