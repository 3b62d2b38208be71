"""SIGTERM stops a run cleanly at the next step (a checkpoint there, status "stopped"); `--resume`
continues it to weights bit-identical to an uninterrupted run (CPU, same seed)."""

import os
import signal

import pytest
from reliability_helpers import (
    assert_same_weights,
    epochs,
    kill_at_step,
    metric_rows,
    spawn,
    train,
    wait,
)

from training.checkpoints import list_checkpoints
from training.runs import read_summary

STEPS = 12  # 6 epochs of 2 steps
pytestmark = pytest.mark.slow  # child processes: ~10 s each on the 2-core CI machine


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = tmp_path_factory.mktemp("reference")
    assert train(runs, "full", "--steps", str(STEPS), "--ema-decay", "0.9") == 0
    return runs / "full"


def assert_matches_reference(run, reference):
    assert read_summary(run)["status"] == "finished"
    for epoch in epochs(reference):
        assert_same_weights(run, reference, epoch)
        assert_same_weights(run, reference, epoch, "ema.safetensors")
    assert metric_rows(run) == metric_rows(reference)
    assert not [c for c in list_checkpoints(run) if c.partial]  # superseded, pruned


def test_sigterm_mid_epoch_then_resume_is_bit_identical(tmp_path, reference):
    run = tmp_path / "cut"
    proc = spawn(tmp_path, "cut", "--steps", str(STEPS), "--ema-decay", "0.9", fault="sigterm:5")
    status, err = wait(proc)
    assert status == 0, err
    summary = read_summary(run)
    assert summary["status"] == "stopped" and summary["step"] == 5
    assert summary["epoch"] == 3  # the epoch step 5 is in; its checkpoint: 2 epochs complete
    ckpts = list_checkpoints(run)
    assert [c.path.name for c in ckpts] == ["epoch-0001", "epoch-0002", "epoch-0002-step-00000005"]
    assert ckpts[-1].partial and ckpts[-1].meta["step"] == 5 and ckpts[-1].epoch == 2
    assert [r["step"] for r in metric_rows(run)] == [1, 2, 3, 4, 5]

    # killed (no clean stop) in epoch 4: the resume goes back to the step-5 checkpoint
    proc = spawn(tmp_path, "cut", "--resume")
    kill_at_step(proc, run, 7, 0.0)
    wait(proc)
    assert train(tmp_path, "cut", "--resume") == 0
    assert_matches_reference(run, reference)
    assert [c.epoch for c in list_checkpoints(run)] == epochs(reference)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_from_outside_then_resume_is_bit_identical(tmp_path, reference, stop):
    """A real SIGTERM (or one Ctrl-C) at whatever step it lands; the run stops there, resumes, and
    matches."""
    run = tmp_path / "cut"
    proc = spawn(tmp_path, "cut", "--steps", str(STEPS), "--ema-decay", "0.9")
    kill_at_step(proc, run, 3, 0.0, kill=False)
    os.kill(proc.pid, stop)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    summary = read_summary(run)
    assert summary["status"] == "stopped" and 3 <= summary["step"] < STEPS, summary
    assert list_checkpoints(run)[-1].meta["step"] == summary["step"]
    assert f"cut: stopped at step {summary['step']}" in out and "--resume" in out
    assert train(tmp_path, "cut", "--resume") == 0
    assert_matches_reference(run, reference)


def test_a_run_that_trains_now_or_is_longer_than_asked_is_not_resumed(tmp_path, capsys):
    """--resume of a run whose process still trains is refused (two writers would interleave its
    record); so is a --steps below the steps it has trained; neither touches the run. A --steps of
    exactly those steps finishes it there."""
    run = tmp_path / "busy"
    proc = spawn(tmp_path, "busy", "--steps", "100000")
    try:
        kill_at_step(proc, run, 2, 0.0, kill=False)
        assert train(tmp_path, "busy", "--resume") == 2
        pid = read_summary(run)["process"]["pid"]
        assert (
            f"run 'busy' is training now (process {pid}); stop it first" in capsys.readouterr().err
        )
    finally:
        os.kill(proc.pid, signal.SIGTERM)
    status, err = wait(proc)
    assert status == 0, err
    record = {
        name: (run / name).read_bytes() for name in ("config.json", "summary.json", "metrics.jsonl")
    }
    done = read_summary(run)["step"]
    assert train(tmp_path, "busy", "--resume", "--steps", str(done - 1)) == 2
    assert (
        f"has trained {done} steps already, and {done - 1} is its length; pass a larger --steps"
        in capsys.readouterr().err
    )
    assert {name: (run / name).read_bytes() for name in record} == record
    assert train(tmp_path, "busy", "--resume", "--steps", str(done)) == 0
    summary = read_summary(run)
    assert summary["status"] == "finished" and summary["step"] == done


def test_a_second_ctrl_c_aborts_without_waiting_for_the_step(capsys):
    from training.trainer import STOP, interrupt

    STOP.clear()
    try:
        interrupt()
        assert STOP.is_set() and "Ctrl-C again: abort without one" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            interrupt()
    finally:
        STOP.clear()
