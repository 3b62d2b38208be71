"""Training and evaluation as background processes: start, find again, stop, queue (no Streamlit).

A job is `python -m training ...` started in its own session, so it outlives the page and the
server; its argv is built from a validated request (TrainRequest, EvalRequest), never from text,
and it runs without a shell. A new run's options go to it in `<run>/options.json`, which the CLI
reads with `--config`. Its stdout and stderr go to `<run>/train.log` (`evaluate.log`), and
`<run>/job.json` (`evaluate-job.json`, written atomically) records its pid, the process's start
time and its argv: a job counts as live only while a process with that pid and start time runs,
so a recycled pid is never trusted. Runs trained from a terminal are found through the process
recorded in their summary.json. A training run that the limit keeps waiting sits in
`<runs>/.queue.json` until `advance_queue` starts it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from samplers.app.devices import resolve_device
from training.checkpoints import list_checkpoints
from training.config import (
    EXPERIMENTS,
    GUIDANCE_SCALES,
    PER_CLASS,
    ConfigError,
    Experiment,
    TrainOptions,
    check_sampler,
    save_options,
    validate,
)
from training.jsontypes import from_json
from training.runs import (
    RunFileError,
    check_runs_folder,
    load_run_config,
    process_alive,
    process_identity,
    read_config,
    read_summary,
    safe_run_dir,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
JOB_FILES = {"train": "job.json", "evaluate": "evaluate-job.json"}
LOGS = {"train": "train.log", "evaluate": "evaluate.log"}
OPTIONS_FILE = "options.json"  # a new run's options, as the Train page asked (--config)
QUEUE_FILE = ".queue.json"
LOCK_FILE = ".jobs.lock"
MAX_HIDDEN = 512
MAX_STEPS = 10_000_000
MAX_SEED = 2**31 - 1


class JobError(ValueError):
    """A job that cannot start or stop as asked; the message says why, for people."""


class Busy(JobError):
    """The limit of concurrent training runs is reached (the request may be queued)."""


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise JobError(f"{name} must be between {low} and {high}, got {value}")
    return value


@dataclass(frozen=True)
class TrainRequest:
    """A training run the Train page asks for: a new run of `options` (built by
    training.config.make_options, as the CLI builds its own), or, without options, the resume of
    the run `name` of `experiment`. A new run's options travel to the training process in an
    options file (`python -m training EXPERIMENT --config FILE`), so the CLI reads and checks them
    as it reads any options file."""

    experiment: Experiment
    name: str
    options: TrainOptions | None = None  # None: resume the run `name`

    @classmethod
    def new(cls, options: TrainOptions) -> TrainRequest:
        return cls(options.experiment, options.name, options)

    @classmethod
    def from_json(cls, data: Any, source: str = "request") -> TrainRequest:
        """A request as asdict wrote it (a queue row); ValueError when it is not one."""
        request = from_json(cls, data, source)
        if request.options is not None:
            validate(request.options)
        return request

    @property
    def resume(self) -> bool:
        return self.options is None

    def validate(self, runs_dir: str | Path) -> Path:
        """The run folder; JobError (a clear message) when the run cannot start there: a name
        that is taken or unsafe, a run that cannot resume, a runs folder that cannot take runs,
        a device this machine lacks."""
        if self.experiment not in EXPERIMENTS:
            raise JobError(
                f"unknown experiment {self.experiment!r}; choose from {', '.join(EXPERIMENTS)}"
            )
        try:
            run_dir = safe_run_dir(runs_dir, self.name)
        except ConfigError as e:
            raise JobError(str(e)) from None
        if self.options is None:
            cfg = read_config(run_dir)
            if not cfg:
                raise JobError(f"there is no run {self.name!r} in {runs_dir} to resume")
            if cfg.get("experiment") != self.experiment:
                raise JobError(
                    f"run {self.name!r} is a {cfg.get('experiment')} run, not {self.experiment}"
                )
            if not list_checkpoints(run_dir):
                raise JobError(f"run {self.name!r} has no checkpoint to resume from yet")
            if read_summary(run_dir).get("status") == "finished":
                raise JobError(f"run {self.name!r} has finished; start a new run to train more")
            return run_dir
        if (self.options.experiment, self.options.name) != (self.experiment, self.name):
            raise JobError(f"the options are those of run {self.options.name!r}, not {self.name!r}")
        if (run_dir / "config.json").exists():
            raise JobError(
                f"a run named {self.name!r} already exists in {runs_dir}: resume it, "
                f"or pick another name"
            )
        try:
            check_runs_folder(runs_dir)
            resolve_device(self.options.device)
        except ValueError as e:  # ConfigError, DeviceUnavailable
            raise JobError(str(e)) from None
        return run_dir

    def options_file(self, runs_dir: str | Path) -> Path:
        """Where a new run's options are written for its process: in its run folder."""
        return Path(runs_dir).resolve() / self.name / OPTIONS_FILE

    def argv(self, runs_dir: str | Path) -> list[str]:
        """The command (after validate): `python -m training EXPERIMENT --runs-dir=DIR` with
        `--config=FILE` (a new run: prepare writes FILE) or `--name=NAME --resume`."""
        args = [self.experiment, f"--runs-dir={Path(runs_dir).resolve()}"]
        if self.options is None:
            args += [f"--name={self.name}", "--resume"]
        else:
            args += [f"--config={self.options_file(runs_dir)}"]
        return [sys.executable, "-m", "training", *args]

    def prepare(self, runs_dir: str | Path) -> list[str]:
        """argv, after writing a new run's options file (atomically) where argv names it."""
        if self.options is not None:
            self.options_file(runs_dir).parent.mkdir(parents=True, exist_ok=True)
            save_options(self.options_file(runs_dir), self.options)
        return self.argv(runs_dir)


@dataclass(frozen=True)
class EvalRequest:
    """`python -m training evaluate RUN_DIR` with the page's sample count, repeats and sampler
    steps."""

    run_dir: Path
    per_class: int = PER_CLASS
    steps: int | None = None  # None: the run's
    repeats: int = 1  # sample sets a scale, scored by their mean
    guidance: tuple[float, ...] = GUIDANCE_SCALES

    def validate(self) -> Path:
        if not (self.run_dir / "config.json").is_file():
            raise JobError(f"{self.run_dir} is not a run (no config.json)")
        if not list_checkpoints(self.run_dir):
            raise JobError(f"run {self.run_dir.name!r} has no checkpoint to evaluate yet")
        _int("samples per class", self.per_class, 1, 1000)
        _int("repeats", self.repeats, 1, 20)
        if self.steps is not None:
            options = load_run_config(self.run_dir).options
            check_sampler(options, options.sampler, _int("sampler steps", self.steps, 1, 1000))
        if not self.guidance or not all(
            isinstance(g, (int, float)) and 0 <= g <= 20 for g in self.guidance
        ):
            raise JobError(f"guidance scales must be numbers in [0, 20], got {self.guidance!r}")
        return self.run_dir

    def argv(self) -> list[str]:
        args = [
            "evaluate",
            str(self.run_dir.resolve()),
            f"--per-class={self.per_class}",
            "--guidance",
            *[f"{g:g}" for g in self.guidance],
        ]
        args += [f"--steps={self.steps}"] if self.steps is not None else []
        args += [f"--repeats={self.repeats}"] if self.repeats != 1 else []
        return [sys.executable, "-m", "training", *args]


@dataclass
class Job:
    """A started process, as its job file records it."""

    kind: str  # "train" | "evaluate"
    run_dir: Path
    argv: list[str]
    process: dict[str, Any]  # training.runs.process_identity
    started: float
    stop_requested: float | None = None

    @property
    def pid(self) -> int:
        return int(self.process["pid"])

    @property
    def log(self) -> Path:
        return self.run_dir / LOGS[self.kind]

    def alive(self) -> bool:
        return bool(process_alive(self.process))

    def save(self) -> None:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        write_json(self.run_dir / JOB_FILES[self.kind], d)


def command_line(argv: list[str]) -> str:
    """argv as a user would type it (`python -m training ...`), quoted where needed."""
    import shlex

    return shlex.join(["python", *argv[1:]])


# ----------------------------------------------------------------------------- finding jobs
def find(run_dir: str | Path, kind: str = "train") -> Job | None:
    """The job last started for this run (live or not), or None."""
    path = Path(run_dir) / JOB_FILES[kind]
    try:
        import json

        d = json.loads(path.read_text())
        return Job(
            kind,
            Path(run_dir),
            list(d["argv"]),
            dict(d["process"]),
            float(d["started"]),
            d.get("stop_requested"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_job(run_dir: str | Path, kind: str = "train") -> Job | None:
    job = find(run_dir, kind)
    return job if job is not None and job.alive() else None


BUSY = ("running", "starting", "closing")  # statuses whose training process is alive


def run_status(run_dir: str | Path) -> str:
    """running, starting (launched, no record yet), closing (ended, its process still closing
    W&B), interrupted (its process died while it was running: resumable), failed to start (its
    process ended before writing a record: see its log), unreadable (summary.json is not what
    the trainer writes), or the status summary.json records (finished, stopped, failed...)."""
    run_dir = Path(run_dir)
    try:
        summary = read_summary(run_dir)
    except RunFileError:
        summary = None
    status = "unreadable" if summary is None else summary.get("status", "unknown")
    job = find(run_dir)
    if job is not None and job.alive():
        if summary is None or _mtime(run_dir / "summary.json") < job.started:
            return "starting"  # the trainer has not rewritten its record yet
        return "running" if status == "running" else "closing"
    if summary is None:
        return status
    if job is not None and not summary:
        return "failed to start"
    alive = process_alive(summary.get("process"))  # None: cannot tell (an older run, another host)
    if status == "running" and (alive is False or (alive is None and job is not None)):
        return "interrupted"
    return status


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def training_runs(runs_dir: str | Path) -> list[Path]:
    """Run folders under runs_dir whose training process is live (started here or elsewhere)."""
    root = Path(runs_dir)
    out = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if not p.is_dir() or p.name.startswith("."):
            continue
        if live_job(p) is not None:
            out.append(p)
        elif (p / "summary.json").exists():
            try:
                s = read_summary(p)
            except ValueError:
                continue
            if s.get("status") == "running" and process_alive(s.get("process")):
                out.append(p)
    return out


# ----------------------------------------------------------------------------- starting
@contextlib.contextmanager
def _locked(runs_dir: Path) -> Iterator[None]:
    """Serialize job starts and queue edits of one runs folder across sessions and servers;
    JobError, before anything is created, for a folder that cannot hold runs."""
    try:
        check_runs_folder(runs_dir)
    except ConfigError as e:
        raise JobError(str(e)) from None
    runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: one server per runs folder
        yield
        return
    with open(runs_dir / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _spawn(kind: str, run_dir: Path, argv: list[str]) -> Job:
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run_dir / LOGS[kind], "ab") as log:
        log.write(f"\n$ {command_line(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        identity = process_identity(proc.pid)
    except Exception:  # it already exited (psutil.NoSuchProcess): record what can be
        identity = {"pid": proc.pid, "started": 0.0, "host": ""}
    # reap it when it exits, so a finished job is not left as a zombie of this server
    threading.Thread(target=proc.wait, daemon=True, name=f"reap-{proc.pid}").start()
    job = Job(kind, run_dir, argv, identity, time.time())
    job.save()
    return job


def start_training(request: TrainRequest, runs_dir: str | Path, limit: int = 1) -> Job:
    """Start `request` in the background; Busy when `limit` runs already train in runs_dir,
    JobError for an invalid request or a run that trains or is being evaluated now."""
    runs_dir = Path(runs_dir)
    with _locked(runs_dir):
        check_not_queued(request, runs_dir)
        return _start_locked(request, runs_dir, limit)


def check_not_queued(request: TrainRequest, runs_dir: str | Path) -> None:
    """JobError when a queued request already uses the name of this new run."""
    if not request.resume and any(r.name == request.name for r in queued(runs_dir)):
        raise JobError(f"a run named {request.name!r} is queued already: pick another name")


def _start_locked(request: TrainRequest, runs_dir: Path, limit: int) -> Job:
    run_dir = request.validate(runs_dir)
    if live_job(run_dir) is not None or run_dir in training_runs(runs_dir):
        raise JobError(f"run {request.name!r} is training now")
    if live_job(run_dir, "evaluate") is not None:
        raise JobError(f"run {request.name!r} is being evaluated now; wait for it to finish")
    busy = training_runs(runs_dir)
    if len(busy) >= limit:
        names = ", ".join(p.name for p in busy)
        raise Busy(
            f"{len(busy)} run{'s' * (len(busy) > 1)} already training ({names}); the limit "
            f"is {limit} at a time"
        )
    return _spawn("train", run_dir, request.prepare(runs_dir))


def start_evaluation(request: EvalRequest) -> Job:
    """Start `python -m training evaluate` on a run that is not training nor being evaluated."""
    run_dir = request.validate()
    with _locked(run_dir.parent):
        if live_job(run_dir, "evaluate") is not None:
            raise JobError(f"run {run_dir.name!r} is being evaluated already")
        if run_status(run_dir) in BUSY:
            raise JobError(f"run {run_dir.name!r} is training; evaluate it once it has finished")
        return _spawn("evaluate", run_dir, request.argv())


def stop(run_dir: str | Path) -> Job:
    """Ask the run's training process to stop (SIGTERM: it checkpoints at the next step, then
    exits with status "stopped"). JobError when nothing trains there."""
    run_dir = Path(run_dir)
    job = live_job(run_dir)
    if job is None:
        s = read_summary(run_dir)
        if s.get("status") == "running" and process_alive(s.get("process")):
            job = Job("train", run_dir, [], s["process"], 0.0)
        else:
            raise JobError(f"run {run_dir.name!r} is not training")
    os.kill(job.pid, signal.SIGTERM)
    if job.started:
        job.stop_requested = time.time()
        job.save()
    return job


# ----------------------------------------------------------------------------- the queue
def queued(runs_dir: str | Path) -> list[TrainRequest]:
    """The waiting requests of runs_dir, oldest first."""
    import json

    try:
        rows = json.loads((Path(runs_dir) / QUEUE_FILE).read_text())
    except (OSError, ValueError):
        return []
    out = []
    for row in rows if isinstance(rows, list) else []:
        try:
            out.append(TrainRequest.from_json(row, QUEUE_FILE))
        except ValueError:
            continue
    return out


def _write_queue(runs_dir: Path, requests: list[TrainRequest]) -> None:
    write_json(runs_dir / QUEUE_FILE, [asdict(r) for r in requests])


def enqueue(request: TrainRequest, runs_dir: str | Path) -> int:
    """Add a valid request to the queue; returns its place (1 = next). JobError when invalid or
    when a queued request already uses its name."""
    runs_dir = Path(runs_dir)
    with _locked(runs_dir):
        request.validate(runs_dir)
        check_not_queued(request, runs_dir)
        waiting = queued(runs_dir)
        _write_queue(runs_dir, waiting + [request])
        return len(waiting) + 1


def dequeue(runs_dir: str | Path, name: str) -> None:
    """Remove the queued request of run `name` (nothing when it is not queued)."""
    runs_dir = Path(runs_dir)
    with _locked(runs_dir):
        _write_queue(runs_dir, [r for r in queued(runs_dir) if r.name != name])


def advance_queue(runs_dir: str | Path, limit: int = 1) -> tuple[list[Job], list[str]]:
    """Start queued requests while fewer than `limit` runs train; a request that became invalid
    (its name taken meanwhile) is dropped. Returns (started jobs, messages of dropped ones)."""
    runs_dir = Path(runs_dir)
    started, dropped = [], []
    if not (runs_dir / QUEUE_FILE).exists():
        return started, dropped
    with _locked(runs_dir):
        waiting = queued(runs_dir)
        while waiting:
            try:
                started.append(_start_locked(waiting[0], runs_dir, limit))
            except Busy:
                break
            except JobError as e:
                dropped.append(f"queued run {waiting[0].name!r} dropped: {e}")
            waiting.pop(0)
        _write_queue(runs_dir, waiting)
    return started, dropped


def tail(path: str | Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last `lines` lines of a log ('' when absent); tqdm's carriage returns keep the last."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    rows = [
        line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
        for line in text.split("\n")
    ]
    return "\n".join(rows[-lines:])
