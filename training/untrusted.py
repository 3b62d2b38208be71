"""Files of a run folder, read as untrusted input: no symlinks, no special files, bounded sizes.

Anything in a run folder may have been edited by hand, cut short by a full disk or planted. So a
file is opened component by component under the run folder without following a symlink
(O_NOFOLLOW; the lab writes none), without blocking (O_NONBLOCK: a FIFO would hang a reader), then
checked to be a regular file (fstat) of at most the size its reader allows, and only then read.
Every failure is a RunFileError whose message names the file relative to the run folder and says
what is wrong ("summary.json: a FIFO, not a regular file").
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 4 * 2**20  # config.json, summary.json, job.json, meta.json: a few KB each
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class RunFileError(ValueError):
    """A file of a run folder that cannot be read as the lab writes it: `file` names it (relative
    to the run folder, or a full path), `reason` says what is wrong."""

    def __init__(self, file: str | Path, reason: str | None = None):
        if reason is None:  # one message that names its file itself
            file, reason = "", str(file)
        super().__init__(reason if str(file) in (".", "") else f"{file}: {reason}")
        self.file, self.reason = str(file), reason  # file ".": the run folder itself

    def under(self, run_dir: Path) -> RunFileError:
        """The same error naming the file by its full path (for a command's one-line error)."""
        if not self.file:
            return self
        return RunFileError(run_dir if self.file == "." else run_dir / self.file, self.reason)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "a special file"


def human_size(n: int) -> str:
    """A byte count for people: "5.0 MB", "100 bytes"."""
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n} bytes"


def _open_error(name: str, e: OSError) -> RunFileError:
    if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and NOFOLLOW):
        return RunFileError(name, "a symlink (not followed: the lab writes none)")
    if e.errno == errno.ENOTDIR:
        return RunFileError(name, "a folder on its path is not a folder")
    return RunFileError(name, f"cannot be read ({e.strerror or e})")


@contextmanager
def open_under(root: Path, relative: str, max_bytes: int | None) -> Iterator[tuple[int, int]]:
    """Yield (fd, size) of the regular file root/relative, opened read-only without following a
    symlink at any step below `root` and without blocking; FileNotFoundError when it is absent,
    RunFileError when it is something else or larger than `max_bytes` (None: no limit)."""
    parts = Path(relative).parts
    fds: list[int] = []
    try:
        try:
            fds.append(os.open(root, os.O_RDONLY | DIRECTORY | CLOEXEC))
            for part in parts[:-1]:
                fds.append(
                    os.open(part, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=fds[-1])
                )
            fd = os.open(parts[-1], os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC, dir_fd=fds[-1])
        except FileNotFoundError:
            raise
        except OSError as e:
            raise _open_error(relative, e) from None
        fds.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RunFileError(relative, f"{_kind(info.st_mode)}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise RunFileError(
                relative,
                f"{human_size(info.st_size)}, over the {human_size(max_bytes)} it may have",
            )
        os.set_blocking(fd, True)
        yield fd, info.st_size
    finally:
        for fd in reversed(fds):
            os.close(fd)


def _read(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = os.read(fd, min(left, 2**20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_bytes(root: Path, relative: str, max_bytes: int) -> bytes:
    """The bytes of root/relative (open_under's checks); FileNotFoundError when absent."""
    try:
        with open_under(root, relative, max_bytes) as (fd, size):
            return _read(fd, min(size, max_bytes) + 1)[:max_bytes]
    except FileNotFoundError:
        raise
    except OSError as e:
        raise RunFileError(relative, f"cannot be read ({e.strerror or e})") from None


def read_tail(root: Path, relative: str, max_bytes: int) -> tuple[bytes, bool]:
    """The last `max_bytes` of root/relative (whole lines: a cut first line is dropped) and
    whether the file was longer; FileNotFoundError when absent."""
    try:
        with open_under(root, relative, None) as (fd, size):
            if size <= max_bytes:
                return _read(fd, size), False
            os.lseek(fd, size - max_bytes, os.SEEK_SET)
            data = _read(fd, max_bytes)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise RunFileError(relative, f"cannot be read ({e.strerror or e})") from None
    return data[data.find(b"\n") + 1 :], True


def read_json(root: Path, relative: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in root/relative (None when the file is absent); RunFileError when it cannot
    be read or is not JSON."""
    try:
        data = read_bytes(root, relative, max_bytes)
    except FileNotFoundError:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise RunFileError(relative, f"not valid JSON ({e})") from None


def read_json_object(root: Path, relative: str) -> dict[str, Any] | None:
    """read_json, and RunFileError unless the value is a JSON object."""
    obj = read_json(root, relative)
    if obj is not None and not isinstance(obj, dict):
        raise RunFileError(relative, "not a JSON object")
    return obj


def entry_kind(root: Path, relative: str) -> str | None:
    """What root/relative is without following a final symlink: "file", "folder", "symlink",
    "other", or None when absent or unreachable."""
    try:
        mode = os.lstat(root / relative).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return "symlink" if stat.S_ISLNK(mode) else "other"


def open_append(path: Path) -> int:
    """A file descriptor appending to `path` (created 0o644), never through a symlink (OSError:
    ELOOP); refuses anything but a regular file."""
    fd = os.open(
        path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW | NONBLOCK | CLOEXEC, 0o644
    )
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path}: not a regular file")
    os.set_blocking(fd, True)
    return fd


def make_folder(path: Path) -> Path:
    """`path` as a real folder to write into (created when absent, its parents too), never
    through a symlink: a symlink in its place is removed (not followed) and the folder made anew;
    OSError (EEXIST) when a file or something else is there. Returns `path`."""
    path = Path(path)
    if entry_kind(path.parent, path.name) == "symlink":
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    if entry_kind(path.parent, path.name) != "folder":  # a link planted meanwhile
        raise OSError(errno.EEXIST, f"{path}: not a folder")
    return path
