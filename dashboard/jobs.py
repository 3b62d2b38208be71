"""Training and evaluation as background processes: start, find again, stop, queue (no Streamlit).

A job is `python -m training ...` started in its own session, so it outlives the page and the
server; its argv is built from a validated request (TrainRequest, EvalRequest), never from text,
and it runs without a shell. Its stdout and stderr go to `<run>/train.log` (`evaluate.log`), and
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
    check_sampler,
    make_config,
)
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
    """One `python -m training EXPERIMENT ...` run, as the Train page's form describes it."""

    experiment: str
    name: str
    recipe: str = "course"
    dataset: str = "auto"
    steps: int | None = None  # None: the recipe's length (or `epochs`)
    epochs: int | None = None
    seed: int = 0
    hidden: int | None = None  # None: the experiment's D
    wandb_mode: str = "offline"
    device: str = "auto"
    log_every: int | None = None  # None: the CLI's (TrainConfig.log_every)
    resume: bool = False

    def validate(self, runs_dir: str | Path) -> Path:
        """The run folder; JobError (a clear message) for any value the CLI would not take."""
        if self.experiment not in EXPERIMENTS:
            raise JobError(
                f"unknown experiment {self.experiment!r}; choose from {', '.join(EXPERIMENTS)}"
            )
        try:
            run_dir = safe_run_dir(runs_dir, self.name)
        except ConfigError as e:
            raise JobError(str(e)) from None
        if self.resume:
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
        if (run_dir / "config.json").exists():
            raise JobError(
                f"a run named {self.name!r} already exists in {runs_dir}: resume it, "
                f"or pick another name"
            )
        try:
            check_runs_folder(runs_dir)
        except ConfigError as e:
            raise JobError(str(e)) from None
        if self.steps is not None and self.epochs is not None:
            raise JobError("give steps or epochs, not both")
        if self.steps is not None:
            _int("steps", self.steps, 1, MAX_STEPS)
        if self.epochs is not None:
            _int("epochs", self.epochs, 1, 10_000)
        if self.hidden is not None:
            _int("width (--hidden)", self.hidden, 1, MAX_HIDDEN)
        if self.log_every is not None:
            _int("log every", self.log_every, 1, 100_000)
        _int("seed", self.seed, 0, MAX_SEED)
        try:  # what the CLI itself would refuse: the same checks, before a process starts
            make_config(
                self.experiment,
                recipe=self.recipe,
                dataset=self.dataset,
                steps=self.steps,
                epochs=self.epochs,
                seed=self.seed,
                hidden=self.hidden,
                wandb_mode=self.wandb_mode,
                device=self.device,
                log_every=self.log_every,
            )
            resolve_device(self.device)
        except ValueError as e:  # ConfigError, DeviceUnavailable
            raise JobError(str(e)) from None
        return run_dir

    def argv(self, runs_dir: str | Path) -> list[str]:
        """The command (after validate): `python -m training EXPERIMENT --option=value ...`."""
        args = [self.experiment, f"--runs-dir={Path(runs_dir).resolve()}", f"--name={self.name}"]
        if self.resume:
            return [sys.executable, "-m", "training", *args, "--resume"]
        args += [
            f"--recipe={self.recipe}",
            f"--dataset={self.dataset}",
            f"--seed={self.seed}",
            f"--wandb-mode={self.wandb_mode}",
            f"--device={self.device}",
        ]
        args += [f"--steps={self.steps}"] if self.steps is not None else []
        args += [f"--epochs={self.epochs}"] if self.epochs is not None else []
        args += [f"--hidden={self.hidden}"] if self.hidden is not None else []
        args += [f"--log-every={self.log_every}"] if self.log_every is not None else []
        return [sys.executable, "-m", "training", *args]


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
            cfg = load_run_config(self.run_dir)
            check_sampler(cfg, cfg.sampler, _int("sampler steps", self.steps, 1, 1000))
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
    return _spawn("train", run_dir, request.argv(runs_dir))


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
            out.append(TrainRequest(**row))
        except TypeError:
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
