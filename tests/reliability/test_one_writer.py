"""One writer per run folder (issue 36 findings 2, 3, 4 and 10): a trainer holds the run's
lock for its life, so a second trainer of the run, from the CLI or the dashboard, fresh or resumed,
is refused at once with the holder's pid; Stop signals only that holder; the jobs lock never
blocks forever; writes never go through a symlink."""

import fcntl
import json
import os
import signal
import threading
import time

import psutil
import pytest
from reliability_helpers import kill_at_step, spawn, train, wait

from dashboard import jobs
from tests.fixtures.tiny_run import new_run
from training import cli
from training.checkpoints import list_checkpoints
from training.pretrained import weights_fit
from training.runlock import LOCK_FILE, claim_run, process_identity
from training.runs import load_run_config, read_metrics, read_run, read_summary, write_json


def first_to_exit(procs, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                return p
        time.sleep(0.05)
    raise AssertionError("neither process ended")


def one_trainer_of(run, procs):
    """Of trainers started together on `run`: one is refused at once naming the other's pid, the
    other trains on and is stopped (SIGTERM); returns the winner's exit status and stderr."""
    loser = first_to_exit(procs)
    winner = next(p for p in procs if p is not loser)
    status, err = wait(loser)
    assert status == 2, err
    assert f"run '{run.name}' is training now (process {winner.pid}); stop it first" in err, err
    assert err.count("\n") == 1 and winner.poll() is None  # one line; the winner trains on
    kill_at_step(winner, run, 2, 0.0, kill=False)
    os.kill(winner.pid, signal.SIGTERM)
    return wait(winner)


def assert_one_writer(run):
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == list(range(1, len(steps) + 1)), steps  # no step logged twice
    cfg = load_run_config(run).options
    for c in list_checkpoints(run):  # checkpoints of the width its config records
        assert weights_fit(cfg, c.path / "model.safetensors"), c.path


@pytest.mark.slow
def test_two_cli_starts_of_one_name_train_once(tmp_path):
    run = tmp_path / "same"
    procs = [spawn(tmp_path, "same", "--steps", "100000", "--hidden", h) for h in ("4", "8")]
    status, err = one_trainer_of(run, procs)
    assert status == 0, err
    assert read_summary(run)["status"] == "stopped"
    assert_one_writer(run)


@pytest.mark.slow
def test_two_resumes_at_once_train_once(tmp_path):
    run = tmp_path / "r"
    assert train(tmp_path, "r", "--steps", "100000", "--stop-after", "1") == 0
    procs = [spawn(tmp_path, "r", "--resume") for _ in range(2)]
    status, err = one_trainer_of(run, procs)
    assert status == 0, err
    assert_one_writer(run)


@pytest.mark.slow
def test_the_page_refuses_a_run_a_terminal_trains_and_stops_it(tmp_path):
    run = tmp_path / "term"
    proc = spawn(tmp_path, "term", "--steps", "100000")
    try:
        kill_at_step(proc, run, 2, 0.0, kill=False)
        assert read_run(run).status == "running" and read_run(run).trainer.pid == proc.pid
        with pytest.raises(jobs.JobError, match="run 'term' is training now"):
            jobs.start_training(jobs.TrainRequest("flow-class", "term"), tmp_path)
        assert jobs.stop(run).pid == proc.pid  # the verified holder of the run's lock
        status, err = wait(proc)
    finally:
        proc.kill()
    assert status == 0 and read_summary(run)["status"] == "stopped", err


def test_a_forged_job_file_or_lock_record_never_makes_stop_signal_a_process(tmp_path, stand_in):
    victim = stand_in()  # another process of this user, with its real pid and start time
    run = tmp_path / "forged"
    run.mkdir()
    write_json(run / "summary.json", {"status": "running", "process": victim.to_dict()})
    jobs.Job("train", run, ["python"], victim, time.time()).save()
    with pytest.raises(jobs.JobError, match="is not training"):
        jobs.stop(run)
    claim = claim_run(run)  # a real holder (this process), its lock file rewritten to the victim
    try:
        (run / LOCK_FILE).write_text(json.dumps(victim.to_dict()))
        assert read_run(run).trainer == victim  # what the file says...
        with pytest.raises(jobs.JobError, match="is not training"):
            jobs.stop(run)  # ...is not trusted: the victim does not hold the lock file open
    finally:
        claim.release()
    assert psutil.Process(victim.pid).status() != psutil.STATUS_ZOMBIE  # never signalled


@pytest.mark.timeout(60)
def test_a_held_jobs_lock_times_out_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "LOCK_TIMEOUT_S", 0.5)
    fd = os.open(tmp_path / jobs.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another session, server or runner holds it
    try:
        start = time.monotonic()
        with pytest.raises(jobs.JobError, match=r"has held .*\.jobs\.lock for over 0\.5 s"):
            jobs.start_training(new_run("x"), tmp_path)
        with pytest.raises(jobs.JobError, match="for over 0.5 s"):
            jobs.enqueue(new_run("x"), tmp_path)
        assert time.monotonic() - start < 10
    finally:
        os.close(fd)
    assert not (tmp_path / "x").exists()


def test_writes_never_follow_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    runs = tmp_path / "runs"
    (runs / "old").mkdir(parents=True)  # a folder without config.json: a new run may take it
    (runs / "old" / "metrics.jsonl").symlink_to(outside)
    assert train(runs, "old", "--steps", "2") == 0
    assert not (runs / "old" / "metrics.jsonl").is_symlink()  # replaced, not written through
    (runs / jobs.LOCK_FILE).symlink_to(tmp_path / "created-by-the-lock")
    with pytest.raises(jobs.JobError, match="cannot open the jobs lock"):
        jobs.start_training(new_run("new"), runs)
    (runs / jobs.LOCK_FILE).unlink()
    (runs / "new").mkdir()
    (runs / "new" / "train.log").symlink_to(outside)
    with pytest.raises(jobs.JobError, match="could not start"):
        jobs.start_training(new_run("new"), runs)
    (runs / "new" / "train.log").unlink()
    (runs / "new" / LOCK_FILE).symlink_to(tmp_path / "created-by-the-claim")
    assert train(runs, "new", "--steps", "2") == 1  # refused, before anything was written
    assert outside.read_text() == "precious\n"
    assert not (tmp_path / "created-by-the-lock").exists()
    assert not (tmp_path / "created-by-the-claim").exists()
    # the failed start left the Train page's options file; the trainer wrote nothing
    assert sorted(p.name for p in (runs / "new").iterdir()) == ["options.json", LOCK_FILE]


def test_run_subfolders_and_temporary_files_are_never_written_through_a_link(tmp_path):
    """checkpoints/, samples/ and figures/ as links to folders outside the runs folder, and a
    link planted at summary.json's temporary name: replaced by the run's own, never written
    through."""
    outside = {name: tmp_path / "outside" / name for name in ("checkpoints", "samples", "figures")}
    runs, precious = tmp_path / "runs", tmp_path / "outside" / "precious"
    run = runs / "old"
    run.mkdir(parents=True)  # a folder without config.json: a new run may take it
    for name, target in outside.items():
        target.mkdir(parents=True)
        (run / name).symlink_to(target)
    precious.write_text("precious\n")
    tmp_name = f".summary.json.{os.getpid()}.{threading.get_ident()}.tmp"  # atomic_path's
    (run / tmp_name).symlink_to(precious)
    assert train(runs, "old", "--steps", "2") == 0
    assert cli.main(["figures", str(run), "--steps", "2"]) == 0
    for name, target in outside.items():
        assert (run / name).is_dir() and not (run / name).is_symlink(), name
        assert list(target.iterdir()) == [], name  # nothing written through the link
    assert list_checkpoints(run) and list((run / "samples").glob("*.png"))
    assert precious.read_text() == "precious\n" and not (run / tmp_name).exists()


def test_a_claim_names_its_holder_and_is_dropped_with_it(tmp_path):
    run = tmp_path / "r"
    claim = claim_run(run)
    assert read_run(run).trainer == process_identity() and read_run(run).training
    claim.release()
    assert not read_run(run).training and read_run(run).trainer is None
    claim_run(run).release()  # free again
