"""Training and evaluation as background processes: start, stop, queue (no Streamlit needed).

Every job runs through dashboard.runner, a small process in a session of its own (it outlives the
page and the server): it starts `python -m training ...`, whose argv is built from a validated
request (TrainRequest, EvalRequest), never from text, and runs without a shell (a new run's
options go to it in `<run>/options.json`, which the CLI reads with `--config`). The runner appends
the output to `<run>/train.log` (`evaluate.log`), waits for the process however it ends, and then
starts the queued training runs the limit allows. So the queue advances with no page open.
`<run>/job.json` (`evaluate-job.json`, atomic) records the process (pid and start time: a recycled
pid is never trusted), its runner and argv.

What a run is doing is training.runs' one status (`read_run(path).status`); a training process
holds `<run>/trainer.lock` for its life, and Stop signals only the process that verifiably holds
it (a pid written into a job file is never signalled on its word). `<runs>/.jobs.lock` serialises
starts and queue edits of one runs folder across sessions, servers and runners; it is waited for
at most LOCK_TIMEOUT_S. The queue is `<runs>/.queue.json`: one that cannot be read is renamed
aside (`.queue.json.unreadable-TIME`), never overwritten, and `<runs>/queue.log` says what the
queue started, dropped or set aside. Its rows are TrainRequests: {"experiment", "name", "options"}
(options null: a resume), read back through training.jsontypes.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from samplers.app.devices import resolve_device
from training.config import (
    EXPERIMENTS,
    GUIDANCE_SCALES,
    LIMITS,
    PER_CLASS,
    ConfigError,
    Experiment,
    TrainOptions,
    check_sampler,
    save_options,
    validate,
)
from training.jsontypes import from_json
from training.runlock import LOCK_FILE as TRAINER_LOCK
from training.runlock import Process, flock_within, process_identity, verified_holder
from training.runs import (
    BUSY,
    JOB_FILES,
    LOGS,
    Job,
    check_runs_folder,
    list_runs,
    read_run,
    run_status,
    safe_run_dir,
    write_json,
)
from training.untrusted import CLOEXEC, NOFOLLOW, RunFileError, open_append, read_json, read_tail

__all__ = [
    "BUSY",
    "JOB_FILES",
    "LOGS",
    "OPTIONS_FILE",
    "Busy",
    "EvalRequest",
    "Job",
    "JobError",
    "Queue",
    "TrainRequest",
    "advance_queue",
    "command_line",
    "dequeue",
    "enqueue",
    "queued",
    "read_queue",
    "run_status",
    "start_evaluation",
    "start_training",
    "stop",
    "tail",
    "training_runs",
]

REPO = Path(__file__).resolve().parent.parent
OPTIONS_FILE = "options.json"  # a new run's options, as the Train page asked (--config)
QUEUE_FILE = ".queue.json"
QUEUE_LOG = "queue.log"
LOCK_FILE = ".jobs.lock"
LOCK_TIMEOUT_S = 30.0  # a start, or a queue edit, waits this long at most for another one
RUNNER_ANSWER_S = 30.0  # dashboard.runner answers within a second; this bounds a stuck one
MAX_HIDDEN = LIMITS["hidden"]  # the Train page's bounds: the options' own (training.config)
MAX_STEPS = LIMITS["steps"]
MAX_SEED = 2**31 - 1  # the pages' seed inputs (the options take up to LIMITS["seed"])


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
    def from_json(cls, data: Any, source: str = "") -> TrainRequest:
        """A request as asdict wrote it (a queue row); ValueError (JSONTypeError, ConfigError)
        naming the field when it is not one, or its options cannot train."""
        request = from_json(cls, data, source)
        if request.options is not None:
            validate(request.options)
        return request

    @property
    def resume(self) -> bool:
        return self.options is None

    def validate(self, runs_dir: str | Path) -> Path:
        """The run folder; JobError (a clear message) when the run cannot start there: a name
        that is taken or unsafe, a run that cannot resume (a run without a checkpoint resumes
        from step 0), a runs folder that cannot take runs, a device this machine lacks."""
        if self.experiment not in EXPERIMENTS:
            raise JobError(
                f"unknown experiment {self.experiment!r}; choose from {', '.join(EXPERIMENTS)}"
            )
        try:
            run_dir = safe_run_dir(runs_dir, self.name)
        except ConfigError as e:
            raise JobError(str(e)) from None
        if self.options is None:
            run = read_run(run_dir)
            if run.config is None and run.status != "empty":
                raise JobError(f"run {self.name!r} cannot be resumed: {run.problem}")
            if run.config is None:
                raise JobError(f"there is no run {self.name!r} in {runs_dir} to resume")
            if run.experiment != self.experiment:
                raise JobError(
                    f"run {self.name!r} is a {run.experiment} run, not {self.experiment}"
                )
            if run.status in BUSY:
                raise JobError(f"run {self.name!r} is training now")
            if run.status == "finished":
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
        `--config=FILE` (a new run: prepare writes FILE) or `--name=NAME --resume`; a new
        student's `python -m training distill TEACHER_RUN --runs-dir=DIR --config=FILE`."""
        args = [self.experiment, f"--runs-dir={Path(runs_dir).resolve()}"]
        if self.options is not None and self.options.distill is not None:  # a new student
            args = ["distill", self.options.distill.teacher, *args[1:]]
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
    """`python -m training evaluate RUN_DIR` with the page's sample count, repeats and sweep:
    every sampler x step count x guidance scale (no samplers / steps: the run's own)."""

    run_dir: Path
    per_class: int = PER_CLASS
    steps: tuple[int, ...] = ()  # step counts of each sampler (none: the run's)
    repeats: int = 1  # sample sets a scale, scored by their mean
    guidance: tuple[float, ...] = GUIDANCE_SCALES
    samplers: tuple[str, ...] = ()  # none: the run's own

    def validate(self) -> Path:
        run = read_run(self.run_dir)
        if run.config is None:
            raise JobError(f"{self.run_dir} is not a run ({run.problem or 'no config.json'})")
        if any(p.file == "summary.json" for p in run.problems):
            raise JobError(f"cannot record an evaluation of {run.name!r}: {run.problem}")
        if not run.checkpoints:
            raise JobError(f"run {run.name!r} has no checkpoint to evaluate yet")
        _int("samples per class", self.per_class, 1, 1000)
        _int("repeats", self.repeats, 1, 20)
        options = run.config.options
        for steps in self.steps:
            _int("sampler steps", steps, 1, 1000)
        for sampler in self.samplers or (options.sampler,):
            for steps in self.steps or (options.sample_steps,):
                check_sampler(options, sampler, steps)
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
        args += ["--sampler", *self.samplers] if self.samplers else []
        args += ["--steps", *map(str, self.steps)] if self.steps else []
        args += [f"--repeats={self.repeats}"] if self.repeats != 1 else []
        return [sys.executable, "-m", "training", *args]


def command_line(argv: list[str]) -> str:
    """argv as a user would type it (`python -m training ...`), quoted where needed."""
    import shlex

    return shlex.join(["python", *argv[1:]])


def training_runs(runs_dir: str | Path) -> list[Path]:
    """Run folders under runs_dir whose training process is starting or alive (started here or
    from a terminal)."""
    return sorted(r.path for r in list_runs(runs_dir) if r.status in BUSY)


# ----------------------------------------------------------------------------- starting
@contextlib.contextmanager
def _locked(runs_dir: Path) -> Iterator[None]:
    """Serialize job starts and queue edits of one runs folder across sessions, servers and
    runners; JobError, before anything is created, for a folder that cannot hold runs, and when
    another holds the lock longer than LOCK_TIMEOUT_S."""
    try:
        check_runs_folder(runs_dir)
    except ConfigError as e:
        raise JobError(str(e)) from None
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW | CLOEXEC, 0o644)
    except OSError as e:
        raise JobError(f"cannot open the jobs lock {path} ({e.strerror or e})") from None
    try:
        if not flock_within(fd, LOCK_TIMEOUT_S, poll_s=0.05):
            raise JobError(
                f"another process has held {path} for over {LOCK_TIMEOUT_S:g} s; try again, or "
                f"end the process that holds it (`fuser {path}` names it)"
            )
        yield
    finally:
        os.close(fd)  # drops the lock


def _answer(proc: subprocess.Popen) -> str:
    """The runner's first line ('' when it ended or stayed silent for RUNNER_ANSWER_S)."""
    ready, _, _ = select.select([proc.stdout], [], [], RUNNER_ANSWER_S)
    return proc.stdout.readline().decode(errors="replace").strip() if ready else ""


def _kill(runner: subprocess.Popen) -> None:
    """SIGKILL a runner's session (it and the process it started) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()


def _spawn(kind: str, run_dir: Path, argv: list[str], queue_limit: int | None = None) -> Job:
    """Start `argv` through dashboard.runner (with `queue_limit`: which then advances the queue
    of run_dir's runs folder) and record it in the job file; JobError, with no process left
    behind, when it cannot start or be recorded."""
    run_dir.mkdir(parents=True, exist_ok=True)
    queue = ["--queue", str(run_dir.parent), str(queue_limit)] if queue_limit else []
    runner = subprocess.Popen(
        [sys.executable, "-m", "dashboard.runner", *queue, str(run_dir / LOGS[kind]), "--", *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        answer = _answer(runner)
        if not answer.startswith("ok "):
            _kill(runner)
            said = runner.stderr.read(4000).decode(errors="replace").strip().splitlines()
            why = answer.removeprefix("error ") or (said or [f"status {runner.returncode}"])[-1]
            raise JobError(f"could not start {command_line(argv)}: {why}")
        pid = int(answer.split()[1])
        try:
            identity = process_identity(pid)
        except Exception:  # noqa: BLE001 - it has already ended (psutil.NoSuchProcess)
            identity = Process(pid, 0.0, "")
        job = Job(kind, run_dir, argv, identity, time.time(), runner=process_identity(runner.pid))
        job.save()
    except BaseException as e:
        _kill(runner)  # the runner and what it started: a failed start leaves no process
        if isinstance(e, OSError):
            raise JobError(f"could not record the job in {run_dir}: {e.strerror or e}") from None
        raise
    finally:
        runner.stdout.close()
        runner.stderr.close()
    # reap the runner when it exits, so a finished job is not left as a zombie of this server
    threading.Thread(target=runner.wait, daemon=True, name=f"reap-{runner.pid}").start()
    return job


def start_training(request: TrainRequest, runs_dir: str | Path, limit: int = 1) -> Job:
    """Start `request` in the background; Busy when `limit` runs already train in runs_dir,
    JobError for an invalid request or a run that trains or is being evaluated now. When the run
    ends, its runner starts the queue's next runs (with this `limit`)."""
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
    run = read_run(run_dir)
    if run.status in BUSY:
        raise JobError(f"run {request.name!r} is training now")
    if run.evaluation_job is not None and run.evaluation_job.alive():
        raise JobError(f"run {request.name!r} is being evaluated now; wait for it to finish")
    busy = training_runs(runs_dir)
    if len(busy) >= limit:
        names = ", ".join(p.name for p in busy)
        raise Busy(
            f"{len(busy)} run{'s' * (len(busy) > 1)} already training ({names}); the limit "
            f"is {limit} at a time"
        )
    return _spawn("train", run_dir, request.prepare(runs_dir), queue_limit=limit)


def start_evaluation(request: EvalRequest) -> Job:
    """Start `python -m training evaluate` on a run that is not training nor being evaluated."""
    run_dir = request.validate()
    with _locked(run_dir.parent):
        run = read_run(run_dir)
        if run.evaluation_job is not None and run.evaluation_job.alive():
            raise JobError(f"run {run_dir.name!r} is being evaluated already")
        if run.status in BUSY:
            raise JobError(f"run {run_dir.name!r} is training; evaluate it once it has finished")
        return _spawn("evaluate", run_dir, request.argv())


def stop(run_dir: str | Path) -> Process:
    """Ask the run's training process to stop (SIGTERM: it checkpoints at the next step, then
    exits with status "stopped"); returns it. Only the process that verifiably holds the run's
    trainer.lock is signalled (training.runlock.verified_holder); JobError when there is none."""
    run_dir = Path(run_dir)
    holder = verified_holder(run_dir)
    if holder is None:
        raise JobError(
            f"run {run_dir.name!r} is not training (no process holds its {TRAINER_LOCK})"
        )
    os.kill(holder.pid, signal.SIGTERM)
    run = read_run(run_dir)
    if run.job is not None and run.job.process == holder:
        replace(run.job, stop_requested=time.time()).save()
    return holder


# ----------------------------------------------------------------------------- the queue
@dataclass(frozen=True)
class Queue:
    """`.queue.json`: the waiting requests, oldest first, and what in the file could not be read
    (those entries are left out; the next queue edit sets the file aside and keeps the rest)."""

    requests: tuple[TrainRequest, ...] = ()
    problem: str | None = None


def read_queue(runs_dir: str | Path) -> Queue:
    """The queue of runs_dir, every entry checked (types, one entry a name); never raises."""
    try:
        rows = read_json(Path(runs_dir), QUEUE_FILE)
    except RunFileError as e:
        return Queue(problem=str(e))
    if rows is None:
        return Queue()
    if not isinstance(rows, list):
        return Queue(problem=f"{QUEUE_FILE}: not a JSON list")
    requests: dict[str, TrainRequest] = {}
    bad = []
    for i, row in enumerate(rows, 1):
        try:
            request = TrainRequest.from_json(row)
        except ValueError as e:  # JSONTypeError, ConfigError: a row that is no request
            bad.append(f"entry {i}: {e}")
            continue
        if request.name in requests:
            bad.append(f"entry {i}: a second entry named {request.name!r}")
            continue
        requests[request.name] = request
    problem = f"{QUEUE_FILE}: {'; '.join(bad)}" if bad else None
    return Queue(tuple(requests.values()), problem)


def queued(runs_dir: str | Path) -> list[TrainRequest]:
    """The waiting requests of runs_dir, oldest first (read_queue)."""
    return list(read_queue(runs_dir).requests)


def _note(runs_dir: Path, message: str) -> None:
    """A line in <runs>/queue.log (what the queue did while no page may have been open)."""
    try:
        fd = open_append(runs_dir / QUEUE_LOG)
        try:
            os.write(fd, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n".encode())
        finally:
            os.close(fd)
    except OSError as e:
        print(f"warning: {message} (not logged: {e})", file=sys.stderr)


def _queue_locked(runs_dir: Path) -> list[TrainRequest]:
    """The queue, under the jobs lock; a file that cannot be read in full is renamed aside first
    (its readable entries stay queued), with a line in queue.log."""
    queue = read_queue(runs_dir)
    if queue.problem is not None:
        aside = f"{QUEUE_FILE}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(runs_dir / QUEUE_FILE, runs_dir / aside)
        _note(runs_dir, f"{queue.problem}; the file was kept as {aside}")
        if queue.requests:
            _write_queue(runs_dir, list(queue.requests))
    return list(queue.requests)


def _write_queue(runs_dir: Path, requests: list[TrainRequest]) -> None:
    write_json(runs_dir / QUEUE_FILE, [asdict(r) for r in requests])


def enqueue(request: TrainRequest, runs_dir: str | Path, limit: int = 1) -> int:
    """Add a valid request to the queue, then start what the limit allows (the run that kept it
    waiting may have ended meanwhile); returns its place (1 = next; 0 = it has started). JobError
    when invalid or when a queued request already uses its name."""
    runs_dir = Path(runs_dir)
    with _locked(runs_dir):
        request.validate(runs_dir)
        check_not_queued(request, runs_dir)
        waiting = _queue_locked(runs_dir) + [request]
        _write_queue(runs_dir, waiting)
        _advance_locked(runs_dir, limit)
        left = [r.name for r in queued(runs_dir)]
        return left.index(request.name) + 1 if request.name in left else 0


def dequeue(runs_dir: str | Path, name: str) -> None:
    """Remove the queued request of run `name` (nothing when it is not queued)."""
    runs_dir = Path(runs_dir)
    with _locked(runs_dir):
        _write_queue(runs_dir, [r for r in _queue_locked(runs_dir) if r.name != name])


def _advance_locked(runs_dir: Path, limit: int) -> tuple[list[Job], list[str]]:
    started, dropped = [], []
    waiting = _queue_locked(runs_dir)
    if not waiting:
        return started, dropped
    while waiting:
        try:
            started.append(_start_locked(waiting[0], runs_dir, limit))
        except Busy:
            break
        except JobError as e:
            dropped.append(f"queued run {waiting[0].name!r} dropped: {e}")
        waiting.pop(0)
    _write_queue(runs_dir, waiting)
    for job in started:
        _note(runs_dir, f"started queued run {job.run_dir.name!r} (pid {job.pid})")
    for message in dropped:
        _note(runs_dir, message)
    return started, dropped


def advance_queue(runs_dir: str | Path, limit: int = 1) -> tuple[list[Job], list[str]]:
    """Start queued requests while fewer than `limit` runs train; a request that became invalid
    (its name taken meanwhile) is dropped. Returns (started jobs, messages of dropped ones), both
    also written to queue.log. dashboard.runner calls it when a run ends."""
    runs_dir = Path(runs_dir)
    if not (runs_dir / QUEUE_FILE).exists():
        return [], []
    with _locked(runs_dir):
        return _advance_locked(runs_dir, limit)


def tail(path: str | Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last `lines` lines of a log ('' when absent or not a regular file); tqdm's carriage
    returns keep the last update of a line."""
    path = Path(path)
    try:
        data, _ = read_tail(path.parent, path.name, max_bytes)
    except (FileNotFoundError, RunFileError):
        return ""
    rows = [
        line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
        for line in data.decode("utf-8", "replace").split("\n")
    ]
    return "\n".join(rows[-lines:])
