"""Atomic writes: a reader (or a crash) sees the old file or folder or the new one, never a part.

The one implementation the lab uses for its run records, checkpoints, caches and downloads.
Temporary names start with "." and hold "tmp", so listings and cleaners can skip them.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (`.NAME.PID.THREAD.tmp`) to write the new file to.

    When the block ends normally the temporary file replaces `path` (os.replace); when it raises
    (disk full, read-only) the temporary file is removed and `path` is left as it was. Neither
    is written through a symlink: one at `path` is replaced by the rename, one at the temporary
    name is removed first.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` atomically (atomic_path)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically (atomic_path)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write and fsync one file (a crash of the machine, not only of the process, keeps it)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_folder(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished folder `tmp` to `final`. A folder already at `final` is renamed aside
    (`.old-NAME-PID`) first and removed after, so `final` is always the old or the new one."""
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
