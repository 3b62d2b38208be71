"""One trainer per run folder: an OS lock on `<run>/trainer.lock`, held while the trainer writes.

The training process takes the lock (fcntl.flock, exclusive) before it writes anything to the run
folder and keeps it until it has written its last (`Claim.release`, or its exit: the OS drops a
dead process's locks, SIGKILL included). Right after taking it, the holder writes its identity
(pid, start time, host) into the file. So:

- a second trainer of the same run, from the CLI or the dashboard, fresh or resumed, is refused at
  once with the holder's pid (RunBusy);
- `holder(run_dir)` tells whether a trainer is alive: the lock is held, and by whom;
- `verified_holder` is the process a Stop may signal: it holds the lock, its identity matches a
  live process, and that process has this very lock file open (a pid written into a job file or
  into the lock file by anyone else is never trusted alone).

A probe takes a shared lock for an instant and drops it; a trainer retries for up to CLAIM_WAIT_S
before concluding the lock is another trainer's. The lock file is opened without following a
symlink and must be a regular file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError
from .untrusted import CLOEXEC, NOFOLLOW, NONBLOCK

LOCK_FILE = "trainer.lock"
CLAIM_WAIT_S = 1.0  # a probe holds the lock for microseconds; a trainer holds it for hours
IDENTITY_WAIT_S = 0.5  # a new holder writes its identity right after taking the lock


@dataclass(frozen=True)
class Process:
    """A process, told apart from a later one given the same pid by its start time."""

    pid: int
    started: float  # seconds since the epoch (psutil create_time)
    host: str

    def alive(self) -> bool | None:
        """Whether it still runs: None when it cannot be told (another host), False when its pid
        is gone, a zombie, or now another process."""
        import psutil

        if self.host != socket.gethostname():
            return None
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.started) < 0.01
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except (psutil.Error, ValueError, OverflowError):
            return False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def process_identity(pid: int | None = None) -> Process:
    """The identity of a process (default: this one); psutil.Error when there is none."""
    import psutil

    pid = os.getpid() if pid is None else pid
    return Process(pid, psutil.Process(pid).create_time(), socket.gethostname())


class RunBusy(ConfigError):
    """Another process trains this run now (the message names it and how to stop it)."""


def _open_lock(run_dir: Path, create: bool) -> int:
    flags = (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY
    fd = os.open(run_dir / LOCK_FILE, flags | NOFOLLOW | NONBLOCK | CLOEXEC, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{run_dir / LOCK_FILE}: not a regular file")
    return fd


def _identity(fd: int) -> Process | None:
    """The holder identity written in the lock file (None while empty or unreadable)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0))
        return Process(int(data["pid"]), float(data["started"]), str(data["host"]))
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None


def _held_by(fd: int) -> tuple[bool, Process | None]:
    """(held, holder identity) of an open lock file, probed with a shared lock for an instant."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        deadline = time.monotonic() + IDENTITY_WAIT_S
        while (identity := _identity(fd)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return True, identity
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False, None


def holder(run_dir: Path) -> tuple[bool, Process | None]:
    """(whether a trainer holds the run's lock, its recorded identity or None): (False, None)
    when the lock file is absent or cannot be opened as a regular file (nothing is created)."""
    try:
        fd = _open_lock(run_dir, create=False)
    except OSError:
        return False, None
    try:
        return _held_by(fd)
    finally:
        os.close(fd)


def verified_holder(run_dir: Path) -> Process | None:
    """The process holding the run's lock, when that can be verified: its recorded identity is a
    live process that has this lock file open. None otherwise (no holder, or one not verified)."""
    import psutil

    held, identity = holder(run_dir)
    if not held or identity is None or not identity.alive():
        return None
    lock = os.path.realpath(run_dir / LOCK_FILE)
    try:
        files = psutil.Process(identity.pid).open_files()
    except psutil.Error:
        return None
    return identity if any(os.path.realpath(f.path) == lock for f in files) else None


class Claim:
    """The held lock of one run folder (release() or the process's end drops it)."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self._fd = run_dir, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:  # a claim dropped unreleased (a Trainer never run) goes with it
        self.release()


def flock_within(fd: int, timeout_s: float, poll_s: float = 0.02) -> bool:
    """Take the exclusive flock of `fd`, retrying every poll_s until timeout_s has passed;
    whether it was taken."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)


def busy_message(run_dir: Path, identity: Process | None) -> str:
    who = f"process {identity.pid}" if identity is not None else "another process"
    stop = f"kill -TERM {identity.pid}" if identity is not None else "kill -TERM its process"
    return (
        f"run {run_dir.name!r} is training now ({who}); stop it first "
        f"(the dashboard's Stop, or {stop})"
    )


def claim_run(run_dir: Path) -> Claim:
    """Take the run folder's lock (creating the folder: ConfigError first when its runs folder
    cannot take runs); RunBusy, at once, when another process holds it; OSError when the lock
    file cannot be made (a symlink, a full disk)."""
    if not run_dir.is_dir():
        from .runs import check_runs_folder  # runs reads the lock: imported here, not above

        check_runs_folder(run_dir.parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = _open_lock(run_dir, create=True)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, f"{run_dir / LOCK_FILE} is a symlink; remove it") from None
        raise
    if not flock_within(fd, CLAIM_WAIT_S):
        _, identity = _held_by(fd)
        os.close(fd)
        raise RunBusy(busy_message(run_dir, identity))
    try:
        data = json.dumps(process_identity().to_dict()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        os.close(fd)
        raise
    return Claim(run_dir, fd)
