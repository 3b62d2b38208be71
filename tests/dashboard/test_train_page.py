"""AppTest of the Train page: the command it shows, validation, the limit and the queue, the
watch panel of finished, interrupted and busy runs (no training process is started here)."""

import shutil
import time

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
    assert "At most 2 runs train at a time" in at.caption[0].value
    at = train_page(app, tmp_path, DIFFUSION_LAB_MAX_TRAINING="many")  # not a number: 1
    assert "At most 1 run trains at a time" in at.caption[0].value


def test_the_watch_panel_of_a_finished_run(app, lab_runs, tmp_path):
    shutil.copytree(lab_runs / "flow-class", tmp_path / "flow-class")
    at = train_page(app, tmp_path)
    no_errors(at)
    assert at.selectbox(key="train_watch").value == "flow-class"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "finished" and metrics["Step"] == "4 / 4"
    assert metrics["Epoch"] == "2 of 2"
    assert len(at.get("plotly_chart")) == 2  # loss and learning rate
    assert at.image[0].captions[0] == "latest samples: epoch-0002"
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
