"""`python -m dashboard.runner [--queue RUNS_DIR LIMIT] LOG -- COMMAND...`: one job, then the queue.

dashboard.jobs starts every job through this small process, in a session of its own so that it
outlives the page and the server. It appends COMMAND's output (a `python -m training ...`) to LOG,
answers `ok PID` (or `error MESSAGE`) on its stdout, which dashboard.jobs waits for, then waits for
COMMAND however it ends: finished, failed, stopped or killed. With --queue it then starts the runs
queued in RUNS_DIR that the limit allows (dashboard.jobs.advance_queue, under the jobs lock, so two
runners never start one entry): the queue advances whether or not a page is open.

Until COMMAND has ended it imports only the standard library and training.untrusted, so it answers
within a fraction of a second.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from training.untrusted import open_append


def _answer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    queue = None
    if argv[:1] == ["--queue"]:
        queue, argv = (Path(argv[1]), int(argv[2])), argv[3:]
    log, command = Path(argv[0]), argv[argv.index("--") + 1 :]
    try:
        fd = open_append(log)
        os.write(fd, f"\n$ {shlex.join(['python', *command[1:]])}\n".encode())
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT
        )
    except OSError as e:
        _answer(f"error cannot start {shlex.join(command[1:4])} ({e.strerror or e})")
        return 1
    _answer(f"ok {child.pid}")
    for stream in (1, 2):  # from here on, whatever this process says goes to the log
        os.dup2(fd, stream)
    code = child.wait()
    if queue is not None:
        from dashboard.jobs import advance_queue  # the heavy imports, once the job has ended

        try:
            advance_queue(*queue)
        except Exception as e:  # noqa: BLE001 - said in the log; the job itself has ended
            print(f"runner: the queue could not advance: {e}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
