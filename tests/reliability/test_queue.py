"""The queue needs no page and loses nothing (issue 34 item 6, issue 36 findings 1, 6 and 7):
when a run ends, however it ends, its runner starts the next queued run with no Streamlit at all;
two runners never start one entry; a queue file that cannot be read is kept aside with a message;
a failed start leaves no process; a run killed before its first checkpoint can be resumed."""

import errno
import json
import os
import signal
import threading
import time
from dataclasses import asdict

import psutil
import pytest
from reliability_helpers import (
    ROOT,
    assert_same_weights,
    kill_at_step,
    spawn,
    train,
    wait,
)

from dashboard import jobs
from tests.fixtures.tiny_run import new_run
from training.runlock import Process
from training.runs import read_metrics, read_run, read_summary

APP = str(ROOT / "dashboard" / "app.py")


def wait_for(predicate, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def train_page(root, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DIFFUSION_LAB_RUNS", str(root))
    monkeypatch.setenv("DIFFUSION_LAB_BUNDLED_RUNS", "")
    at = AppTest.from_file(APP, default_timeout=60).run()
    return at.switch_page("screens/train.py").run()


@pytest.mark.slow
def test_the_queue_advances_with_no_page_open(tmp_path):
    """A run SIGKILLed mid-training: its runner starts the queued one; that one finishes and its
    runner starts the next. Only the jobs API is used: no page, no Streamlit."""
    first = jobs.start_training(new_run("first", steps=100_000), tmp_path)
    for name in ("second", "third"):
        with pytest.raises(jobs.Busy):
            jobs.start_training(new_run(name, steps=4), tmp_path)
        jobs.enqueue(new_run(name, steps=4), tmp_path)
    assert [r.name for r in jobs.queued(tmp_path)] == ["second", "third"]
    wait_for(lambda: read_run(tmp_path / "first").status == "running", "the first run")
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: read_run(tmp_path / "third").status == "finished", "the queued runs")
    assert read_run(tmp_path / "first").status == "interrupted"
    assert read_run(tmp_path / "second").status == "finished"
    assert jobs.queued(tmp_path) == []
    log = (tmp_path / jobs.QUEUE_LOG).read_text()
    assert "started queued run 'second'" in log and "started queued run 'third'" in log


def test_two_runners_never_start_one_entry(tmp_path, monkeypatch):
    started = []

    def spawn_job(kind, run_dir, argv, **_):
        started.append(run_dir.name)
        time.sleep(0.2)  # as long as a real start takes: the other runner waits meanwhile
        return jobs.Job(kind, run_dir, argv, Process(0, 0.0, ""), time.time())

    monkeypatch.setattr(jobs, "_spawn", spawn_job)
    jobs._write_queue(tmp_path, [new_run("only")])
    runners = [threading.Thread(target=jobs.advance_queue, args=(tmp_path, 2)) for _ in range(4)]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    assert started == ["only"] and jobs.queued(tmp_path) == []


def test_an_unreadable_queue_is_kept_aside_never_overwritten(tmp_path, monkeypatch, stand_in):
    (tmp_path / "busy").mkdir()  # a run trains: the queue waits
    jobs.Job("train", tmp_path / "busy", ["python"], stand_in(), time.time()).save()
    damaged = b'[{"experiment": "flow-class", "name": "waiting"'  # cut short
    (tmp_path / jobs.QUEUE_FILE).write_bytes(damaged)
    queue = jobs.read_queue(tmp_path)
    assert queue.requests == () and queue.problem.startswith(".queue.json: not valid JSON")
    at = train_page(tmp_path, monkeypatch)
    assert not at.exception
    assert any(".queue.json: not valid JSON" in w.value for w in at.warning)
    assert jobs.enqueue(new_run("new"), tmp_path) == 1
    (aside,) = tmp_path.glob(".queue.json.unreadable-*")
    assert aside.read_bytes() == damaged  # kept as it was
    assert [r.name for r in jobs.queued(tmp_path)] == ["new"]
    log = (tmp_path / jobs.QUEUE_LOG).read_text()
    assert ".queue.json: not valid JSON" in log and f"the file was kept as {aside.name}" in log


def test_queue_entries_of_the_wrong_type_or_a_name_twice_are_left_out_with_a_reason(
    tmp_path, monkeypatch
):
    entry = asdict(new_run("twice", steps=4))
    again = dict(entry, options=dict(entry["options"], seed=1))
    rows = [dict(entry, experiment=["flow-class"], name="listed"), entry, again]
    (tmp_path / jobs.QUEUE_FILE).write_text(json.dumps(rows))
    queue = jobs.read_queue(tmp_path)
    assert [r.name for r in queue.requests] == ["twice"]
    assert queue.problem == (
        '.queue.json: entry 1: \'experiment\' must be one of "denoiser", "pure-noise", '
        '"ddpm-time", "ddpm-class", "flow-time", "flow-class"; got ["flow-class"]; '
        "entry 3: a second entry named 'twice'"
    )
    at = train_page(tmp_path, monkeypatch)  # no StreamlitDuplicateElementKey, no traceback
    assert not at.exception
    assert any("entry 3: a second entry named 'twice'" in w.value for w in at.warning)
    assert at.button(key="train_dequeue_twice")


def test_a_failed_start_leaves_no_process(tmp_path, monkeypatch):
    def full_disk(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobs.Job, "save", full_disk)
    with pytest.raises(jobs.JobError, match="could not record the job in .*No space left"):
        jobs.start_training(new_run("orphan", steps=100_000), tmp_path)

    def ours():
        found = []
        for p in psutil.process_iter(["cmdline"]):
            if any(str(tmp_path.resolve() / "orphan") in a for a in p.info["cmdline"] or []):
                found.append(p)
        return found

    time.sleep(0.5)
    assert ours() == []  # neither the runner nor the training process is left
    assert read_run(tmp_path / "orphan").status != "running"


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path):
    args = ("--steps", "12", "--epoch-steps", "10")  # the first checkpoint at step 10
    assert train(tmp_path, "full", *args) == 0
    proc = spawn(tmp_path, "cut", *args)
    kill_at_step(proc, tmp_path / "cut", 3, 0.0)
    wait(proc)
    run = read_run(tmp_path / "cut")
    assert run.status == "interrupted" and run.checkpoints == ()
    assert jobs.TrainRequest("flow-class", "cut").validate(tmp_path)  # the page's
    # from step 0, with its stored settings (none given again)
    assert train(tmp_path, "cut", "--resume", "--wandb-mode", "disabled", tiny=[]) == 0
    assert read_summary(tmp_path / "cut")["status"] == "finished"
    assert [r["step"] for r in read_metrics(tmp_path / "cut")] == list(range(1, 13))
    for epoch in (1, 2):
        assert_same_weights(tmp_path / "cut", tmp_path / "full", epoch)
