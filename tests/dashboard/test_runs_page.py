"""AppTest of the Runs page on real tiny runs."""

import json
import shutil
import sys

from dashboard import jobs
from training.evaluation_record import read_evaluation
from training.runlock import Process

from .conftest import no_errors


def test_runs_page_compares_runs(app, lab_runs):
    at = app(lab_runs).run()
    no_errors(at)
    assert at.title[0].value == "Runs"
    assert [m.label for m in at.multiselect] == ["Experiment", "Dataset", "Tag", "Compare runs"]
    assert sorted(at.multiselect(key="runs_selected").value) == ["ddpm-class", "flow-class"]
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # loss, learning rate, loss by t-bin; evaluation
    assert '"training loss"' in charts[0].proto.spec and "flow-class" in charts[0].proto.spec
    assert at.select_slider(key="grid_epoch").value == 2 and len(at.image) == 2
    assert at.toggle(key="runs_live").value is False  # both runs finished
    at.select_slider(key="grid_epoch").set_value(1).run()
    captions = sorted(i.captions[0] for i in at.image)
    assert captions == ["ddpm-class · epoch 1", "flow-class · epoch 1"]


def test_evaluation_plot_and_table(app, lab_runs):
    at = app(lab_runs).run()
    table = at.dataframe[1].value  # runs table, evaluation, config diff
    assert list(table["run"]) == ["flow-class"]  # one row per evaluated run
    assert table["at guidance"][0] in ("0", "5")
    assert {"best Fréchet", "class accuracy", "Fréchet floor (real vs real)"} <= set(table)
    assert table["Fréchet floor (real vs real)"].notna().all()
    ev = read_evaluation(lab_runs / "flow-class")
    floor = ev.floors[0].mean
    assert table["x floor"][0] == round(min(c.frechet for c in ev.cells) / floor, 2)
    spec = json.loads(at.get("plotly_chart")[3].proto.spec)
    traces = [(t["name"], t["x"]) for t in spec["data"]]
    assert traces == [("flow-class", [0.0, 5.0])] * 2  # accuracy and Fréchet against guidance
    lines = [shape["y0"] for shape in spec["layout"]["shapes"]]
    assert lines == [round(floor, 2)]  # the real-vs-real floor


def test_evaluate_button_starts_the_cli_evaluation(app, lab_runs, monkeypatch):
    started = []

    def spawn(kind, run_dir, argv, **_):  # records the command instead of running it
        started.append(argv)
        return jobs.Job(kind, run_dir, argv, Process(0, 0.0, ""), 0.0)

    monkeypatch.setattr(jobs, "_spawn", spawn)
    at = app(lab_runs).run()
    assert sorted(at.selectbox(key="runs_eval_run").options) == ["ddpm-class", "flow-class"]
    at.selectbox(key="runs_eval_run").set_value("ddpm-class")
    at.number_input(key="runs_eval_per_class").set_value(5)
    at.number_input(key="runs_eval_repeats").set_value(4)
    at.button(key="runs_eval_start").click().run()
    assert not at.exception
    assert started == [
        [
            sys.executable,
            "-m",
            "training",
            "evaluate",
            str((lab_runs / "ddpm-class").resolve()),
            "--per-class=5",
            "--guidance",
            "0",
            "1",
            "3",
            "5",
            "7",
            "--repeats=4",
        ]
    ]
    at.number_input(key="runs_eval_steps").set_value(301).run()  # a DDPM of T = 300 steps
    at.button(key="runs_eval_start").click().run()
    assert not at.exception and len(started) == 1  # refused on the page, no process started
    assert "the ddpm sampler takes 1 to 300 steps on this model" in at.error[0].value


def test_the_compared_runs_follow_the_filters_and_outlast_a_page_visit(app, lab_runs):
    at = app(lab_runs).run()
    at.multiselect(key="runs_selected").set_value(["ddpm-class"]).run()
    at.multiselect[0].set_value(["flow-class"]).run()  # the choice no longer passes the filter
    assert at.multiselect(key="runs_selected").value == ["flow-class"]  # not an empty page
    at.multiselect[0].set_value([]).run()
    assert at.multiselect(key="runs_selected").value == ["flow-class"]  # kept, still passes
    at.multiselect(key="runs_tags").set_value(["arch-course"]).run()
    at.switch_page("screens/studio.py").run()
    at.switch_page("screens/runs.py").run()
    no_errors(at)
    assert at.multiselect(key="runs_selected").value == ["flow-class"]
    assert at.multiselect(key="runs_tags").value == ["arch-course"]


def test_runs_page_filters_and_config_diff(app, lab_runs):
    at = app(lab_runs).run()
    at.multiselect[0].set_value(["flow-class"]).run()  # experiment filter
    no_errors(at)
    assert at.multiselect(key="runs_selected").options == ["flow-class"]
    assert any("Select two or more runs" in c.value for c in at.caption)
    at = app(lab_runs).run()
    diff = at.dataframe[2].value  # runs table, evaluation, then the config diff
    assert {"experiment", "kind", "lr"} <= set(diff.index)
    assert "hidden" not in diff.index  # equal in both runs


def test_wandb_pull_disabled_without_wandb(app, lab_runs):
    at = app(lab_runs, WANDB_MODE="offline").run()
    assert at.button(key="wandb_pull").disabled
    assert any("offline" in c.value for c in at.caption)


def test_wandb_panel_waits_for_the_user_before_going_online(app, lab_runs):
    at = app(
        lab_runs,
        WANDB_MODE="",
        WANDB_API_KEY="0" * 40,
        DIFFUSION_LAB_WANDB_PROJECT="someone/diffusion-lab",
    ).run()
    no_errors(at)
    assert at.toggle(key="wandb_on").value is False  # no network call until switched on
    assert at.toggle(key="wandb_on").label == "List the runs of someone/diffusion-lab"


def test_no_runs_message(app, tmp_path):
    at = app(tmp_path / "empty").run()
    no_errors(at)
    assert "No runs yet" in at.info[0].value and "python -m training flow-class" in at.info[0].value


def test_run_deleted_while_open(app, lab_runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(lab_runs / "flow-class", root / "gone")
    shutil.copytree(lab_runs / "ddpm-class", root / "kept")
    at = app(root).run()
    no_errors(at)
    shutil.rmtree(root / "gone")
    at.run()
    no_errors(at)
    assert at.multiselect(key="runs_selected").options == ["kept"]


def test_run_in_progress_turns_live_refresh_on(app, lab_runs, tmp_path):
    from training.runlock import claim_run, process_identity
    from training.runs import read_summary, write_json

    run = shutil.copytree(lab_runs / "ddpm-class", tmp_path / "runs" / "training-now")
    me = process_identity()  # this process stands in for the trainer: it holds the run's lock
    write_json(
        run / "summary.json", {**read_summary(run), "status": "running", "process": me.to_dict()}
    )
    claim = claim_run(run)
    at = app(tmp_path / "runs").run()
    no_errors(at)
    assert at.toggle(key="runs_live").value is True
    assert at.dataframe[0].value["status"].tolist() == ["running"]
    claim.release()  # its process gone (the lock dropped): interrupted, no live refresh
    at = app(tmp_path / "runs").run()
    assert at.toggle(key="runs_live").value is False
    assert at.dataframe[0].value["status"].tolist() == ["interrupted"]


def test_bundled_runs_are_listed_and_tagged(app, lab_runs, tmp_path):
    bundled = tmp_path / "pretrained_runs"
    shutil.copytree(lab_runs / "flow-class", bundled / "flow-class")
    at = app(tmp_path / "no-runs-yet", DIFFUSION_LAB_BUNDLED_RUNS=str(bundled)).run()
    no_errors(at)
    assert at.multiselect(key="runs_selected").value == ["flow-class"]
    assert "bundled" in at.multiselect[2].options  # the tag filter
