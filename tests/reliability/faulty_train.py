"""`python tests/reliability/faulty_train.py FAULT <python -m training arguments>`: a training run
that
SIGKILLs itself at a chosen point (tests only; the training code has no fault hooks).

FAULT is `none`, `write:PERIOD:FILE:FRACTION` (die after writing FRACTION of FILE of checkpoint
PERIOD into its temporary folder), `after-save:PERIOD` (die right after checkpoint PERIOD was
renamed into place, before pruning and the rest of the epoch's bookkeeping) or `sigterm:STEP`
(send itself SIGTERM as step STEP's metrics are logged: a stop at exactly that step).
"""

import os
import signal
import sys

import torch

import training.checkpoints as ck
from training import cli, tracking


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    kind, *args = fault.split(":")
    if kind == "write":
        epoch, name, fraction = int(args[0]), args[1], float(args[2])
        real = ck._write

        def write(path, data):
            if path.name == name and path.parent.name.startswith(
                f".tmp-{ck.checkpoint_name(epoch)}-"
            ):
                with open(path, "wb") as f:
                    f.write(data[: int(len(data) * fraction)])
                die()
            real(path, data)

        ck._write = write
    elif kind == "after-save":
        epoch, real_prune = int(args[0]), ck.prune_checkpoints

        def prune(run_dir, *a, **kw):
            if ck.latest_checkpoint(run_dir).epoch == epoch:
                die()
            real_prune(run_dir, *a, **kw)

        ck.prune_checkpoints = prune
    elif kind == "sigterm":
        step, real_log = int(args[0]), tracking.Tracker.log_metrics

        def log_metrics(self, row):
            real_log(self, row)
            if row["step"] == step:
                os.kill(os.getpid(), signal.SIGTERM)

        tracking.Tracker.log_metrics = log_metrics
    elif kind != "none":
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    install(sys.argv[1])
    sys.exit(cli.main(sys.argv[2:]))
