"""Helpers of the fault-injection suite: tiny runs in-process, or in a child process that a test
kills with SIGKILL (faulty_train.py can also kill itself at a chosen checkpoint write)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.fixtures.tiny_run import tiny_args
from training import cli
from training.checkpoints import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]
TINY = tiny_args()


def train(runs: Path, name: str, *extra: str, experiment: str = "flow-class", tiny=TINY) -> int:
    """`python -m training` in this process; returns its exit status."""
    return cli.main([experiment, *tiny, "--runs-dir", str(runs), "--name", name, *extra])


def child_env(**extra: str) -> dict[str, str]:
    # WANDB_SERVICE: this process's wandb service (set once a test here used W&B); a child must
    # start its own, or W&B faults injected into it would hit this process's service
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k != "WANDB_SERVICE"
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", **extra)
    return env


def spawn(
    runs: Path,
    name: str,
    *extra: str,
    fault: str | None = None,
    env=None,
    experiment: str = "flow-class",
) -> subprocess.Popen:
    """Start a training run in a child process (stdout/stderr captured as text)."""
    tiny = tiny_args(wandb=None if "--wandb-mode" in extra else "disabled")
    argv = [experiment, *tiny, "--runs-dir", str(runs), "--name", name, *extra]
    cmd = [sys.executable, str(ROOT / "tests/reliability/faulty_train.py"), fault or "none", *argv]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def logged_steps(run: Path) -> int:
    """Complete lines of metrics.jsonl (one per step with --log-every 1)."""
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_at_step(
    proc: subprocess.Popen,
    run: Path,
    step: int,
    delay: float,
    timeout: float = 180,
    kill: bool = True,
) -> None:
    """SIGKILL `proc` `delay` seconds after metrics.jsonl shows `step` steps (just wait:
    kill=False)."""
    deadline = time.time() + timeout
    while logged_steps(run) < step:
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended (status {proc.returncode}) before step {step}: "
                f"{proc.stderr.read()[-2000:]}"
            )
        if time.time() > deadline:
            raise AssertionError(f"no step {step} within {timeout} s")
        time.sleep(0.002)
    time.sleep(delay)
    if kill:
        os.kill(proc.pid, signal.SIGKILL)


def epochs(run: Path) -> list[int]:
    return [c.epoch for c in list_checkpoints(run)]


def weights(run: Path, epoch: int, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"epoch-{epoch:04d}" / name)


def assert_same_weights(a: Path, b: Path, epoch: int, name: str = "model.safetensors") -> None:
    wa, wb = weights(a, epoch, name), weights(b, epoch, name)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"epoch {epoch}: {len(different)} tensors differ, e.g. {different[:3]}"


def metric_rows(run: Path) -> list[dict]:
    from training.runs import read_metrics

    return [
        {k: r[k] for k in ("step", "epoch", "loss", "lr", "loss_t_bin")} for r in read_metrics(run)
    ]
