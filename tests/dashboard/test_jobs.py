"""dashboard.jobs: validated requests, live-process checks, the queue, and a real stop + resume."""

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from dashboard import jobs
from tests.fixtures.tiny_run import TINY_OPTIONS, new_run
from training import cli as training_cli
from training.config import ConfigError, RunConfig, make_options, read_options, start_plan
from training.runlock import claim_run, process_identity
from training.runs import read_run, read_summary, write_json

from .conftest import REPO


def write_config(run_dir, name: str) -> None:
    """A config.json (options and plan) as the trainer writes it, for a tiny run (TINY_OPTIONS)."""
    options = make_options("flow-class", name=name, **TINY_OPTIONS)
    plan = start_plan(
        options,
        dataset="mnist-5k",
        train_size=4500,
        pass_steps=4500 // options.batch_size,
        world_size=1,
        device="cpu",
        mixed_precision="no",
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", RunConfig(options, plan).to_json())


def test_argv_names_the_options_file_that_start_writes(tmp_path):
    r = new_run("-x; rm -rf ~", steps=12, seed=3)
    r.validate(tmp_path)
    argv = r.argv(tmp_path)
    assert argv[:4] == [sys.executable, "-m", "training", "flow-class"]
    options_file = tmp_path.resolve() / "-x; rm -rf ~" / "options.json"
    assert f"--config={options_file}" in argv  # one argument, no shell: a path, not a command
    assert not options_file.exists()
    assert r.prepare(tmp_path) == argv and read_options(options_file) == r.options
    resume = jobs.TrainRequest("flow-class", "a").argv(tmp_path)
    assert resume[-2:] == ["--name=a", "--resume"] and not any("--config" in a for a in resume)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(name="../outside"), "invalid run name '../outside'"),
        (dict(name="a/b"), "invalid run name 'a/b'"),
        (dict(name=".hidden"), "invalid run name"),
        (dict(name=""), "invalid run name"),
        pytest.param(
            dict(device="mps"),
            "no MPS device is available here",
            marks=pytest.mark.skipif(
                torch.backends.mps.is_available(), reason="this machine has the Apple GPU asked for"
            ),
        ),
    ],
)
def test_requests_that_cannot_start_are_refused_with_the_reason(tmp_path, change, message):
    with pytest.raises(jobs.JobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        new_run(**{"name": "ok", **change}).validate(tmp_path)
    assert not (tmp_path.parent / "outside").exists()


@pytest.mark.parametrize(
    "experiment, change, message",
    [
        ("gan", {}, "unknown experiment 'gan'"),
        ("flow-class", dict(recipe="turbo"), "recipe 'turbo' is not one of course, fast"),
        ("flow-class", dict(dataset="cifar"), '\'dataset\' must be one of "auto", "mnist"'),
        ("flow-class", dict(wandb_mode="loud"), "'wandb_mode' must be one of \"online\""),
        ("flow-class", dict(steps=5, epochs=1), "give --steps or --epochs, not both"),
        ("flow-class", dict(steps=0), "--steps must be positive, got 0"),
    ],
)
def test_options_the_cli_refuses_are_refused_by_the_same_function(
    tmp_path, experiment, change, message
):
    with pytest.raises(ConfigError, match=message):
        new_run("ok", experiment, **change)
    argv = [experiment, "--name", "ok", "--runs-dir", str(tmp_path)]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY_OPTIONS, **change}.items()]
    try:
        status = training_cli.main(argv)  # make_options refuses it
    except SystemExit as e:  # argparse refuses it first
        status = e.code
    assert status == 2 and not (tmp_path / "ok").exists()


def test_a_value_of_the_wrong_type_is_refused_naming_the_option():
    with pytest.raises(ConfigError, match="'steps' must be an integer or null; got \"5\""):
        new_run("ok", steps="5")  # what argparse's types do for the CLI, the type hints do here


def test_a_queued_request_keeps_its_options(tmp_path):
    fake_job(tmp_path / "busy", process_identity())
    request = new_run("next", recipe="fast", steps=7, seed=5)
    assert jobs.enqueue(request, tmp_path) == 1
    assert jobs.queued(tmp_path) == [request]
    (tmp_path / jobs.QUEUE_FILE).write_text('[{"experiment": "flow-class", "recipe": "fast"}]')
    assert jobs.queued(tmp_path) == []  # a row that is no request is skipped


def test_an_existing_run_is_never_overwritten(tmp_path):
    write_config(tmp_path / "taken", "taken")
    with pytest.raises(jobs.JobError, match="already exists .*resume it, or pick another name"):
        jobs.start_training(new_run("taken"), tmp_path)
    with pytest.raises(jobs.JobError, match="is a flow-class run, not ddpm-class"):
        jobs.TrainRequest("ddpm-class", "taken").validate(tmp_path)
    # no checkpoint yet (killed before its first): a resume starts it from step 0
    resume = jobs.TrainRequest("flow-class", "taken")
    assert resume.validate(tmp_path) == tmp_path / "taken"
    (tmp_path / "taken" / "config.json").write_text('{"experiment": "flow-class"}')
    with pytest.raises(jobs.JobError, match="'taken' cannot be resumed: config.json: not a run"):
        resume.validate(tmp_path)
    with pytest.raises(jobs.JobError, match="there is no run 'absent' in .* to resume"):
        jobs.TrainRequest("flow-class", "absent").validate(tmp_path)


def test_a_runs_folder_that_cannot_take_runs_is_refused_before_a_process_starts(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "taken" / "checkpoints").mkdir(parents=True)  # a run's record
    write_json(tmp_path / "taken" / "config.json", {"experiment": "flow-class"})
    request = new_run("new")
    with pytest.raises(jobs.JobError, match="is not a folder"):
        request.validate(tmp_path / "file" / "runs")
    with pytest.raises(jobs.JobError, match="is inside the run 'taken'"):
        jobs.start_training(request, tmp_path / "taken")
    # the CLI (the trainer) refuses it too, before training
    argv = [
        "flow-class",
        "--runs-dir",
        str(tmp_path / "taken" / "deeper"),
        "--name",
        "new",
        "--dataset",
        "mnist-5k",
        "--steps",
        "1",
        "--wandb-mode",
        "disabled",
    ]
    assert training_cli.main(argv) == 2
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["checkpoints", "config.json"]
    # a project folder's own config.json above the runs folder is no run
    (tmp_path / "project" / "runs").mkdir(parents=True)
    write_json(tmp_path / "project" / "config.json", {"editor": "x"})
    assert request.validate(tmp_path / "project" / "runs") == tmp_path / "project" / "runs" / "new"


def fake_job(run_dir, identity):
    run_dir.mkdir(parents=True, exist_ok=True)
    jobs.Job("train", run_dir, ["python"], identity, time.time()).save()


def test_a_recycled_pid_is_not_trusted(tmp_path, stand_in):
    live = stand_in()
    fake_job(tmp_path / "live", live)
    fake_job(tmp_path / "recycled", replace(live, started=live.started - 3600))  # same pid, older
    fake_job(tmp_path / "other-host", replace(live, host=socket.gethostname() + "-elsewhere"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(dead.pid)
    dead.wait()
    fake_job(tmp_path / "dead", identity)
    assert read_run(tmp_path / "live").status == "starting"
    for name in ("recycled", "other-host", "dead"):
        assert not read_run(tmp_path / name).job.alive()
        assert read_run(tmp_path / name).status == "failed to start"
    assert jobs.training_runs(tmp_path) == [tmp_path / "live"]


def test_status_of_a_run_whose_trainer_died_is_interrupted(tmp_path):
    run = tmp_path / "died"
    write_config(run, "died")
    me = process_identity()
    write_json(run / "summary.json", {"status": "running", "step": 3, "process": me.to_dict()})
    assert jobs.run_status(run) == "interrupted"  # no process holds its lock
    claim = claim_run(run)  # its trainer, here this process, holds the lock: from a terminal too
    assert jobs.run_status(run) == "running" and jobs.training_runs(tmp_path) == [run]
    claim.release()
    assert jobs.run_status(run) == "interrupted" and jobs.training_runs(tmp_path) == []
    (run / "summary.json").unlink()  # a job whose process ended before the trainer wrote a record
    (run / "config.json").unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(dead.pid)
    dead.wait()
    fake_job(run, identity)
    assert jobs.run_status(run) == "failed to start"


def test_a_claimed_run_reads_starting_running_closing(tmp_path, stand_in):
    run = tmp_path / "r"
    claim = claim_run(run)
    me = process_identity()
    assert jobs.run_status(run) == "starting"  # no record of its own yet
    write_json(run / "summary.json", {"status": "stopped", "process": stand_in().to_dict()})
    assert jobs.run_status(run) == "starting"  # an earlier attempt's record
    for status, shown in (("running", "running"), ("finished", "closing"), ("stopped", "closing")):
        write_json(run / "summary.json", {"status": status, "process": me.to_dict()})
        assert jobs.run_status(run) == shown  # closing: it is writing its last
    write_json(run / "summary.json", {"status": "running", "process": me.to_dict()})
    jobs.Job("train", run, ["python"], me, time.time(), stop_requested=time.time()).save()
    assert jobs.run_status(run) == "stopping"
    claim.release()
    write_json(run / "summary.json", {"status": "finished", "process": me.to_dict()})
    assert jobs.run_status(run) == "closing"  # released, its process still exiting
    assert {"starting", "running", "stopping", "closing"} == set(jobs.BUSY)


def test_a_corrupt_summary_is_unreadable_unless_its_job_is_live(tmp_path, stand_in):
    run = tmp_path / "r"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "runn')
    assert jobs.run_status(run) == "unreadable"
    fake_job(run, stand_in())  # a live process launched for the run: it is busy
    assert jobs.run_status(run) == "starting"


def test_the_limit_and_the_queue(tmp_path, stand_in):
    fake_job(tmp_path / "busy", stand_in())
    with pytest.raises(jobs.Busy, match=r"1 run already training \(busy\); the limit is 1"):
        jobs.start_training(new_run("next"), tmp_path)
    assert jobs.enqueue(new_run("next"), tmp_path) == 1
    assert jobs.enqueue(new_run("after"), tmp_path) == 2
    with pytest.raises(jobs.JobError, match="queued already"):
        jobs.enqueue(new_run("next"), tmp_path)
    with pytest.raises(jobs.JobError, match="queued already"):  # nor started past the queue
        jobs.start_training(new_run("after"), tmp_path, limit=2)
    assert not (tmp_path / "after").exists()
    assert jobs.advance_queue(tmp_path, limit=1) == ([], [])  # still busy: nothing starts
    assert [r.name for r in jobs.queued(tmp_path)] == ["next", "after"]
    jobs.dequeue(tmp_path, "next")
    assert [r.name for r in jobs.queued(tmp_path)] == ["after"]
    (tmp_path / "after").mkdir()
    write_json(tmp_path / "after" / "config.json", {"experiment": "flow-class"})  # name taken since
    started, dropped = jobs.advance_queue(tmp_path, limit=2)
    assert started == [] and "'after' dropped: a run named 'after' already exists" in dropped[0]
    assert jobs.queued(tmp_path) == []
    assert "'after' dropped" in (tmp_path / jobs.QUEUE_LOG).read_text()


def test_tail_keeps_the_last_progress_update(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("$ python -m training\nrun:  10%|#\rrun:  20%|##\rrun:  30%|###\nlast line\n")
    assert jobs.tail(log, 3) == "run:  30%|###\nlast line\n"
    assert jobs.tail(tmp_path / "missing.log") == ""


def wait_for(predicate, timeout=240, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def steps_logged(run):
    try:
        return (run / "metrics.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_start_stop_resume_equals_the_cli_run(tmp_path):
    """A job started, stopped (SIGTERM) and resumed from the dashboard ends with the weights of the
    same command run from the CLI in one go."""
    request = new_run("web", steps=40, log_every=1)
    job = jobs.start_training(request, tmp_path)
    # the same options file through the CLI in one go, beside it (in another runs folder: not
    # counted)
    cli_argv = [*request.argv(tmp_path)[1:4], f"--runs-dir={tmp_path / 'cli'}"]
    cli_argv.append(f"--config={request.options_file(tmp_path)}")
    reference = subprocess.Popen(
        [sys.executable, *cli_argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    run = tmp_path / "web"
    wait_for(lambda: steps_logged(run) >= 3 or not job.alive(), what="step 3")
    jobs.stop(run)
    wait_for(lambda: not job.alive(), what="the stop")
    summary = read_summary(run)
    assert summary["status"] == "stopped" and summary["step"] < 40, jobs.tail(job.log)
    assert jobs.run_status(run) == "stopped"
    again = jobs.start_training(jobs.TrainRequest("flow-class", "web"), tmp_path)
    wait_for(lambda: not again.alive(), what="the resumed run")
    assert read_summary(run)["status"] == "finished", jobs.tail(again.log)
    assert "stopped at step" in jobs.tail(run / "train.log", 200)

    _, err = reference.communicate(timeout=240)
    assert reference.returncode == 0, err[-2000:]
    a = load_file(run / "checkpoints/epoch-0001/model.safetensors")
    b = load_file(tmp_path / "cli/web/checkpoints/epoch-0001/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
