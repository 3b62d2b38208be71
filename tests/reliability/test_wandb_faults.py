"""W&B with no key, with a key but no network, and lost mid-run: training goes on, the local record
is complete, the `wandb sync` command is printed, and the key is never printed or written."""

import os
import signal
import time
from pathlib import Path

import pytest
from reliability_helpers import child_env, kill_at_step, spawn, train, wait

from tests.fixtures.tiny_run import tiny_args
from training.runs import read_metrics, read_summary

KEY = "fa4e0123456789abcdef0123456789abcdef0123"
WANDB_TINY = tiny_args(wandb=None)


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return monkeypatch


def assert_complete(run: Path, steps: int) -> dict:
    summary = read_summary(run)
    assert summary["status"] == "finished" and summary["step"] == steps
    assert [r["step"] for r in read_metrics(run)] == list(range(1, steps + 1))
    return summary


def assert_no_key(run: Path, *texts: str) -> None:
    assert not [t for t in texts if KEY in t]
    leaks = [p for p in run.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert not leaks, leaks


def test_no_key_logs_offline(tmp_path, wandb_env, capsys):
    assert train(tmp_path, "nokey", "--steps", "2", tiny=WANDB_TINY) == 0
    summary = assert_complete(tmp_path / "nokey", 2)
    sync = f"wandb sync {tmp_path / 'nokey'}/wandb/offline-run-*"
    assert summary["wandb"]["mode"] == "offline" and summary["wandb"]["sync_command"] == sync
    assert f"upload with: {sync}" in capsys.readouterr().err


def test_key_without_network_falls_back_to_offline(tmp_path, wandb_env, capsys):
    wandb_env.setenv("WANDB_API_KEY", KEY)
    wandb_env.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # a closed port: no W&B server
    wandb_env.setenv("WANDB_INIT_TIMEOUT", "5")
    start = time.time()
    assert train(tmp_path, "nonet", "--steps", "2", tiny=WANDB_TINY) == 0
    assert time.time() - start < 60  # the W&B start gave up within its 5 s (+ the tiny run)
    out, err = capsys.readouterr()
    run = tmp_path / "nonet"
    summary = assert_complete(run, 2)
    assert summary["wandb"]["mode"] == "offline"
    assert "W&B online start failed" in err and "logging offline" in err
    assert f"wandb sync {run}/wandb/offline-run-*" in err
    assert_no_key(run, out, err)


@pytest.mark.slow
def test_wandb_service_dies_mid_run(tmp_path, wandb_env):
    """The wandb-core process of a run is SIGKILLed mid-run (as when the network or the service
    dies): the run goes on to the end with the local record, and prints the sync command."""
    env = child_env(
        WANDB_API_KEY=KEY, WANDB_MODE="offline", HOME=str(tmp_path), NETRC=str(tmp_path / ".netrc")
    )
    proc = spawn(tmp_path, "lost", "--steps", "10", "--wandb-mode", "offline", env=env)
    run = tmp_path / "lost"
    kill_at_step(proc, run, 3, 0.0, kill=False)
    services = [pid for pid in children(proc.pid) if comm(pid) == "wandb-core"]
    assert len(services) == 1, (children(proc.pid), wait(proc))
    (service,) = services
    os.kill(service, signal.SIGKILL)
    status, err = wait(proc)
    assert status == 0, err[-2000:]
    summary = assert_complete(run, 10)
    assert (
        "W&B log failed (ConnectionResetError" in err
        and "training goes on with the local run record" in err
    )
    assert f"wandb sync {run}/wandb/offline-run-*" in err
    assert "Exception ignored" not in err and "Traceback" not in err
    assert summary["wandb"]["error"].startswith("W&B log failed")
    assert summary["wandb"]["sync_command"] == f"wandb sync {run}/wandb/offline-run-*"
    assert_no_key(run, err)


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            out += [child, *children(child)]
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
