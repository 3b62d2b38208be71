"""AppTest of the Train page: the command it shows, validation, the limit and the queue, the
watch panel of finished, interrupted and busy runs (no training process is started here)."""

import shutil
import time
from dataclasses import replace

from dashboard import jobs
from training.config import make_options
from training.runs import process_identity, read_summary, write_json

from .conftest import no_errors


def train_page(app, runs_dir, **env):
    at = app(runs_dir, **env).run()
    return at.switch_page("screens/train.py").run()


def command(at) -> str:
    return at.code[0].value


def chosen(at) -> str:
    """The caption that lists the options beside the recipe's defaults."""
    return next(c.value for c in at.caption if "options.json" in c.value)


def test_the_page_shows_the_exact_command(app, tmp_path):
    at = train_page(app, tmp_path)
    no_errors(at)
    assert at.title[0].value == "Train"
    assert at.selectbox(key="train_experiment").options == [
        "denoiser",
        "pure-noise",
        "ddpm-time",
        "ddpm-class",
        "flow-time",
        "flow-class",
    ]
    assert at.selectbox(key="train_recipe").options == ["course", "fast"]
    assert at.selectbox(key="train_recipe").value == "fast"  # minutes on a CPU
    at.selectbox(key="train_experiment").set_value("ddpm-class").run()
    assert at.text_input(key="train_name").value == "ddpm-class"
    assert at.number_input(key="train_hidden").value == 32  # the fast recipe's D
    at.number_input(key="train_steps").set_value(10)
    at.number_input(key="train_hidden").set_value(8)
    at.selectbox(key="train_wandb").set_value("disabled").run()
    no_errors(at)
    assert command(at) == (
        f"python -m training ddpm-class --runs-dir={tmp_path.resolve()} "
        f"--config={tmp_path.resolve()}/ddpm-class/options.json"
    )
    assert chosen(at) == (
        "`options.json`: the fast recipe's defaults for ddpm-class, with hidden=8, steps=10, "
        "name='ddpm-class', dataset='mnist-5k', wandb_mode='disabled'"
    )
    assert not at.warning


def test_the_width_follows_the_recipe_and_the_recipe_default_is_left_out(app, tmp_path):
    at = train_page(app, tmp_path)
    assert at.number_input(key="train_hidden").value == 32
    assert "hidden" not in chosen(at) and "the fast recipe's" in chosen(at)
    at.selectbox(key="train_recipe").set_value("course").run()
    assert at.number_input(key="train_hidden").value == 64  # the course's D
    assert "hidden" not in chosen(at) and "the course recipe's" in chosen(at)
    at.selectbox(key="train_recipe").set_value("fast").run()
    at.number_input(key="train_hidden").set_value(64).run()  # the course's width, fast recipe
    no_errors(at)
    assert "the fast recipe's" in chosen(at) and "hidden=64" in chosen(at)
    at.number_input(key="train_hidden").set_value(48).run()  # a width set by hand stays
    for recipe in ("course", "fast"):
        at.selectbox(key="train_recipe").set_value(recipe).run()
        assert at.number_input(key="train_hidden").value == 48 and "hidden=48" in chosen(at)
    at.selectbox(key="train_experiment").set_value("denoiser").run()
    assert at.number_input(key="train_hidden").value == 48


def pushes_name(at) -> bool:
    """Whether this run sent the name field's value to the browser to show (set_value)."""
    return at.text_input(key="train_name").proto.set_value


def test_the_offered_name_moves_on_when_taken_but_a_typed_one_stays(app, tmp_path):
    at = train_page(app, tmp_path)
    assert at.text_input(key="train_name").value == "flow-class"
    at.number_input(key="train_steps").set_value(10).run()
    # a value pushed on every run can undo, in the browser, a name the user is typing
    assert not pushes_name(at)
    (tmp_path / "flow-class").mkdir()  # another session or a terminal took it meanwhile
    at.switch_page("screens/runs.py").run()
    at.switch_page("screens/train.py").run()
    assert at.text_input(key="train_name").value == "flow-class-2" and pushes_name(at)
    at.text_input(key="train_name").set_value("mine").run()
    assert not pushes_name(at)
    at.selectbox(key="train_recipe").set_value("course").run()
    assert at.text_input(key="train_name").value == "mine"


def test_a_name_that_escapes_the_runs_folder_is_refused(app, tmp_path):
    runs = tmp_path / "runs"
    at = train_page(app, runs)
    at.text_input(key="train_name").set_value("../escaped").run()
    assert "invalid run name '../escaped'" in at.warning[0].value
    at.button(key="train_start").click().run()
    assert "Cannot start: invalid run name '../escaped'" in at.error[0].value
    assert not (tmp_path / "escaped").exists() and not jobs.training_runs(runs)


def test_an_existing_name_asks_to_resume_or_pick_another(app, lab_runs, tmp_path):
    shutil.copytree(lab_runs / "flow-class", tmp_path / "flow-class")
    at = train_page(app, tmp_path)
    assert at.text_input(key="train_name").value == "flow-class-2"  # a free name by default
    at.text_input(key="train_name").set_value("flow-class").run()
    assert (
        "already exists" in at.warning[0].value
        and "resume it, or pick another name" in at.warning[0].value
    )
    at.button(key="train_start").click().run()
    assert "Cannot start" in at.error[0].value
    assert read_summary(tmp_path / "flow-class")["status"] == "finished"  # untouched


def test_steps_and_epochs_together_are_refused(app, tmp_path):
    at = train_page(app, tmp_path)
    at.number_input(key="train_steps").set_value(100)
    at.number_input(key="train_epochs").set_value(2).run()
    assert "give --steps or --epochs, not both" in at.warning[0].value
    at.button(key="train_start").click().run()
    assert "Cannot start: give --steps or --epochs" in at.error[0].value


def busy_run(root, identity, name="busy"):
    """A run whose job file names a live process just started: it counts as training."""
    (root / name).mkdir(parents=True)
    jobs.Job("train", root / name, ["python"], identity, time.time()).save()


def test_a_second_start_says_why_and_offers_the_queue(app, tmp_path, stand_in):
    busy_run(tmp_path, stand_in())
    at = train_page(app, tmp_path)
    at.text_input(key="train_name").set_value("second")
    at.button(key="train_start").click().run()
    no_errors(at)
    assert "1 run already training (busy); the limit is 1 at a time" in at.warning[0].value
    assert "Queue 'second'" in at.warning[0].value
    at.button(key="train_queue").click().run()
    no_errors(at)
    assert [r.name for r in jobs.queued(tmp_path)] == ["second"]
    assert not (tmp_path / "second").exists()  # waits: nothing started
    assert not any("Not started" in w.value for w in at.warning)  # the offer is gone
    assert at.text_input(key="train_name").value != "second"  # a queued name is taken
    at.text_input(key="train_name").set_value("second").run()
    assert "'second' is queued already" in at.warning[0].value
    assert at.subheader[1].value == "Queue"
    at.button(key="train_dequeue_second").click().run()
    assert jobs.queued(tmp_path) == []


def test_the_page_watches_the_run_the_queue_starts(app, tmp_path, monkeypatch, stand_in):
    busy_run(tmp_path, stand_in(), name="first")
    options = make_options("flow-class", name="second", recipe="fast", steps=2)
    jobs.enqueue(jobs.TrainRequest.new(options), tmp_path)
    at = train_page(app, tmp_path)
    assert at.selectbox(key="train_watch").value == "first"

    def spawn(kind, run_dir, argv, **_):  # stands in for the runner and the training process
        run_dir.mkdir(parents=True, exist_ok=True)
        job = jobs.Job(kind, run_dir, argv, stand_in(), time.time())
        job.save()
        return job

    monkeypatch.setattr(jobs, "_spawn", spawn)
    (tmp_path / "first" / "job.json").unlink()  # the first run ended: its runner starts the next
    assert [job.run_dir.name for job in jobs.advance_queue(tmp_path)[0]] == ["second"]
    at.run()  # the open page watches the run the queue has started, with no page's help
    no_errors(at)
    assert jobs.queued(tmp_path) == [] and at.selectbox(key="train_watch").value == "second"


def test_the_limit_is_a_setting(app, tmp_path, stand_in):
    busy_run(tmp_path, stand_in())
    at = train_page(app, tmp_path, DIFFUSION_LAB_MAX_TRAINING="2")
    assert "At most 2 runs train at a time" in at.caption[1].value  # under the page's line
    at = train_page(app, tmp_path, DIFFUSION_LAB_MAX_TRAINING="many")  # not a number: 1
    assert "At most 1 run trains at a time" in at.caption[1].value


def test_the_watch_panel_of_a_finished_run(app, lab_runs, tmp_path):
    run = shutil.copytree(lab_runs / "flow-class", tmp_path / "flow-class")
    lines = [f"step {i}" for i in range(40)] + ["finished"]
    (run / jobs.LOGS["train"]).write_text("\n".join(lines) + "\n")
    at = train_page(app, tmp_path)
    no_errors(at)
    assert at.selectbox(key="train_watch").value == "flow-class"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "finished" and metrics["Step"] == "4 / 4"
    assert metrics["Epoch"] == "2 of 2"
    assert metrics["Loss"] == f"{read_summary(tmp_path / 'flow-class')['final_loss']:.4f}"
    assert "2 steps (set by --epoch-steps)" in next(m for m in at.metric if m.label == "Epoch").help
    assert len(at.get("plotly_chart")) == 2  # loss and learning rate
    assert at.image[0].captions[0] == "latest samples: end of epoch 2"
    log = at.code[-1].value.rstrip().splitlines()  # its tail, whole: the end is in view
    assert log[-1] == "finished" and "step 0" not in log and len(log) <= 16
    assert at.button(key="train_eval_start").label == "Evaluate"
    assert not [b for b in at.button if b.key in ("train_stop", "train_resume")]


def test_a_run_whose_process_died_is_interrupted_and_resumable(app, lab_runs, tmp_path):
    run = shutil.copytree(lab_runs / "ddpm-class", tmp_path / "died")
    me = process_identity()
    write_json(
        run / "summary.json",
        {
            **read_summary(run),
            "status": "running",
            "process": {**me.to_dict(), "started": me.started - 60},
        },
    )
    at = train_page(app, tmp_path)
    no_errors(at)
    assert {m.label: m.value for m in at.metric}["Status"] == "interrupted"
    assert at.button(key="train_resume").label == "Resume"


def test_a_run_with_a_corrupt_summary_is_a_message(app, lab_runs, tmp_path):
    run = shutil.copytree(lab_runs / "flow-class", tmp_path / "flow-class")
    (run / "summary.json").write_text('{"status": "fini')  # cut short by hand or by a full disk
    assert jobs.run_status(run) == "unreadable"
    at = train_page(app, tmp_path)
    assert not at.exception
    assert at.error[0].value.startswith("Run flow-class: summary.json: not valid JSON")


def running_run(root, lab_runs, name="busy"):
    """A copy of the tiny flow-class run that this test process holds as its trainer: running.
    Returns the claim (release it to end the stand-in)."""
    from training.runlock import claim_run

    run = shutil.copytree(lab_runs / "flow-class", root / name)
    me = process_identity()
    write_json(
        run / "summary.json", {**read_summary(run), "status": "running", "process": me.to_dict()}
    )
    return claim_run(run)


def test_stop_says_stopping_at_once(app, lab_runs, tmp_path, monkeypatch):
    claim = running_run(tmp_path, lab_runs)
    asked = []
    monkeypatch.setattr(jobs, "stop", asked.append)  # no signal: this process stands in
    at = train_page(app, tmp_path)
    no_errors(at)
    assert {m.label: m.value for m in at.metric}["Status"] == "running"
    at.button(key="train_stop").click().run()
    no_errors(at)
    assert asked == [tmp_path / "busy"]
    assert at.info[0].value.startswith("Stopping busy: it finishes its step, writes a checkpoint")
    assert {m.label: m.value for m in at.metric}["Status"] == "stopping"
    assert at.button(key="train_stop").disabled  # asked once
    claim.release()
    write_json(
        tmp_path / "busy" / "summary.json", {**read_summary(tmp_path / "busy"), "status": "stopped"}
    )
    at.run()
    assert at.success[0].value.startswith("Stopped busy at epoch 2 (step 4 of 4); checkpoint")


def test_evaluate_shows_progress_then_done_with_a_link(app, lab_runs, tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    from datetime import UTC, datetime

    from training.evaluation_record import read_evaluation, record_evaluation

    run = shutil.copytree(lab_runs / "flow-class", tmp_path / "flow-class")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

    def spawn(kind, run_dir, argv, **_):  # stands in for the runner and the evaluation
        job = jobs.Job(kind, run_dir, argv, process_identity(child.pid), time.time() - 1)
        job.save()
        return job

    monkeypatch.setattr(jobs, "_spawn", spawn)
    try:
        at = train_page(app, tmp_path)
        at.button(key="train_eval_start").click().run()
        no_errors(at)
        bar = at.get("progress")
        assert "Evaluating flow-class: loading the model" in bar[-1].proto.text
        log = run / jobs.LOGS["evaluate"]
        log.write_text(
            "$ python -m training evaluate\n\r  0%|          | 0/2 [00:00<?, ?cell/s]"
            "\rflow-class: euler 2, guidance 5:  50%|#####     | 1/2 [00:03<00:03,  3.0s/cell]"
        )
        at.run()
        text = at.get("progress")[-1].proto.text
        assert text == "Evaluating flow-class: 1 of 2 · flow-class: euler 2, guidance 5"
        old = read_evaluation(run)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        record_evaluation(run, [replace(old.cells[0], steps=3, evaluated=now)])
        child.send_signal(signal.SIGKILL)
        child.wait()
        at.run()
        no_errors(at)
        assert at.success[0].value.startswith("Evaluation of flow-class done: 1 results.")
        link = at.get("page_link")[0].proto
        assert link.label == "See every result on the Runs page" and link.page_script_hash
    finally:
        child.kill()
        child.wait()


def test_distill_starts_a_student_of_a_listed_teacher(app, lab_runs, tmp_path):
    """The Distill choice offers the runs that can teach and shows the distill command; its
    options file is the student's (python -m training distill TEACHER --config FILE)."""
    at = train_page(app, lab_runs)
    at.radio(key="train_what").set_value("Distill").run()
    no_errors(at)
    teachers = at.selectbox(key="distill_teacher").options
    assert sorted(teachers) == [str(lab_runs / "ddpm-class"), str(lab_runs / "flow-class")]
    at.selectbox(key="distill_teacher").set_value(str(lab_runs / "flow-class")).run()
    assert at.text_input(key="distill_name").value == "flow-class-student"
    assert command(at) == (
        f"python -m training distill {lab_runs / 'flow-class'} --runs-dir={lab_runs.resolve()} "
        f"--config={lab_runs.resolve()}/flow-class-student/options.json"
    )
    assert not at.warning
