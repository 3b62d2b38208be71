"""AppTest of the Runs page on real tiny runs."""

import json
import math
import shutil
import sys

import pytest

from dashboard import jobs
from training.evaluation_record import read_evaluation
from training.runlock import Process

from .conftest import no_errors


def test_runs_page_compares_runs(app, lab_runs):
    at = app(lab_runs).run()
    no_errors(at)
    assert at.title[0].value == "Runs"
    assert "**Diffusion Lab** trains DDPM and flow-matching models" in at.markdown[0].value
    assert all(f"**{page}**" in at.caption[0].value for page in ("Train", "MNIST studio"))
    labels = [m.label for m in at.multiselect]
    assert labels[:4] == ["Experiment", "Dataset", "Tag", "Compare runs"]
    assert sorted(at.multiselect(key="runs_selected").value) == ["ddpm-class", "flow-class"]
    charts = at.get("plotly_chart")
    assert len(charts) == 5  # loss, learning rate, loss by t-bin; evaluation, frontier
    assert '"training loss"' in charts[0].proto.spec and "flow-class" in charts[0].proto.spec
    assert at.toggle(key="runs_live").value is False  # both runs finished


def test_one_epoch_everywhere(app, lab_runs):
    """The table, the chart's epoch axis and the grids count epochs alike, the step beside."""
    at = app(lab_runs).run()
    table = at.dataframe[0].value
    assert list(table["progress"]) == ["epoch 2 (step 4 of 4)"] * 2  # 2-step epochs, 4 steps
    assert any("An epoch is 2 steps (set by --epoch-steps)" in c.value for c in at.caption)
    at.radio(key="curves_x").set_value("epoch").run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][-1]["x"][-1] == 2.0  # step 4 of 2-step epochs: the end of epoch 2
    assert spec["layout"]["xaxis"]["ticktext"] == ["epoch 1", "epoch 2"]
    assert spec["layout"]["xaxis"]["tickvals"] == [0.5, 1.5]  # each label inside its epoch


def test_sample_grids_compare_latest_then_a_shared_epoch(app, lab_runs, tmp_path):
    at = app(lab_runs).run()
    grids = at.segmented_control(key="grid_epoch")
    assert grids.value == "latest" and grids.options == ["latest of each run", "epoch 1", "epoch 2"]
    captions = sorted(i.captions[0] for i in at.image)
    assert captions == ["ddpm-class · epoch 2 (step 4 of 4)", "flow-class · epoch 2 (step 4 of 4)"]
    grids.set_value(1).run()
    captions = sorted(i.captions[0] for i in at.image)
    assert captions == ["ddpm-class · epoch 1 (step 2 of 4)", "flow-class · epoch 1 (step 2 of 4)"]
    # runs whose grids sit at different epochs: latest shows each one's, only shared epochs offered
    root = tmp_path / "runs"
    shutil.copytree(lab_runs / "flow-class", root / "older")
    shutil.copytree(lab_runs / "ddpm-class", root / "newer")
    (root / "older" / "samples" / "epoch-0002.png").unlink()
    at = app(root).run()
    no_errors(at)
    assert at.segmented_control(key="grid_epoch").options == ["latest of each run", "epoch 1"]
    captions = sorted(i.captions[0] for i in at.image)
    assert captions == ["newer · epoch 2 (step 4 of 4)", "older · epoch 1 (step 2 of 4)"]


def test_evaluation_plot_and_table(app, lab_runs):
    at = app(lab_runs).run()
    table = at.dataframe[1].value  # runs table, evaluation, all results, config diff
    assert list(table["run"]) == ["flow-class"]  # one row per evaluated run
    assert list(table)[:7] == [
        "run",
        "checkpoint",
        "samples",
        "sampler",
        "steps",
        "NFE",
        "guidance",
    ]  # what explains a row comes first
    assert table["guidance"][0] in ("0", "5") and table["samples"][0] == 30
    ev = read_evaluation(lab_runs / "flow-class")
    floor = ev.floors[0].mean
    assert table["floor"][0] == round(floor, 2)
    assert table["x floor"][0] == round(min(c.frechet for c in ev.cells) / floor, 2)
    spec = json.loads(at.get("plotly_chart")[3].proto.spec)
    traces = [(t["name"], t["x"]) for t in spec["data"]]
    assert traces == [("flow-class", [0.0, 5.0])] * 2  # accuracy and Fréchet against guidance
    lines = [shape["y0"] for shape in spec["layout"]["shapes"]]
    assert lines == [floor]  # the real-vs-real floor
    labels = [a["text"] for a in spec["layout"]["annotations"] if "real vs real" in a["text"]]
    assert labels == [f"real vs real, mnist-5k, 3 a class: {floor:.1f}"]
    frontier = json.loads(at.get("plotly_chart")[4].proto.spec)
    assert frontier["layout"]["xaxis"]["type"] == "log"
    assert {t["name"] for t in frontier["data"]} == {"euler · guidance 0", "euler · guidance 5"}
    floor_label = next(a for a in frontier["layout"]["annotations"] if "real vs" in a["text"])
    assert floor_label["y"] == pytest.approx(math.log10(floor))  # a log axis: at the floor line
    assert len(at.dataframe[2].value) == len(ev.cells)  # every result


def test_one_floor_line_per_sample_count():
    """Two runs scored with different sample counts: two floors, each labelled with its count."""
    from dashboard.charts import evaluation_figure
    from training.evaluation_record import EvaluationCell, FrechetFloor, RunEvaluation

    def run(per_class: int, floor: float) -> RunEvaluation:
        cell = EvaluationCell(
            "epoch-0002", "heun", 50, 200, 1.0, per_class, 1, 0, "bf16", "mnist-5k", 0.9, 20.0, None
        )
        return RunEvaluation(
            (cell,), (FrechetFloor("mnist-5k", per_class, 10, floor, 1.0, 0, 0.98),)
        )

    spec = evaluation_figure({"a": run(50, 12.1), "b": run(10, 30.72)}).to_plotly_json()
    labels = sorted(a["text"] for a in spec["layout"]["annotations"] if "real vs" in a["text"])
    assert labels == [
        "real vs real, mnist-5k, 10 a class: 30.7",
        "real vs real, mnist-5k, 50 a class: 12.1",
    ]


def test_evaluate_button_starts_the_cli_evaluation(app, lab_runs, monkeypatch):
    started = []

    def spawn(kind, run_dir, argv, **_):  # records the command instead of running it
        started.append(argv)
        return jobs.Job(kind, run_dir, argv, Process(0, 0.0, ""), 0.0)

    monkeypatch.setattr(jobs, "_spawn", spawn)
    at = app(lab_runs).run()
    assert sorted(at.selectbox(key="runs_eval_run").options) == ["ddpm-class", "flow-class"]
    at.selectbox(key="runs_eval_run").set_value("ddpm-class").run()
    assert at.multiselect(key="runs_eval_samplers").options == ["ddpm", "ddim", "dpmpp_2m"]
    at.number_input(key="runs_eval_per_class").set_value(5)
    at.number_input(key="runs_eval_repeats").set_value(4)
    at.button(key="runs_eval_start").click().run()
    assert not at.exception
    head = [sys.executable, "-m", "training", "evaluate", str((lab_runs / "ddpm-class").resolve())]
    guidance = ["--guidance", "0", "1", "3", "5", "7"]
    assert started == [[*head, "--per-class=5", *guidance, "--repeats=4"]]
    # a sweep: samplers x steps
    at.multiselect(key="runs_eval_samplers").set_value(["ddpm", "ddim"])
    at.text_input(key="runs_eval_steps").input("2, 4 8")
    at.button(key="runs_eval_start").click().run()
    assert not at.exception
    sweep = ["--sampler", "ddpm", "ddim", "--steps", "2", "4", "8", "--repeats=4"]
    assert started[-1] == [*head, "--per-class=5", *guidance, *sweep]
    at.text_input(key="runs_eval_steps").input("301").run()  # a DDPM of T = 300 steps
    at.button(key="runs_eval_start").click().run()
    assert not at.exception and len(started) == 2  # refused on the page, no process started
    assert "the ddpm sampler takes 1 to 300 steps on this model" in at.error[0].value
    at.text_input(key="runs_eval_steps").input("four").run()
    at.button(key="runs_eval_start").click().run()
    assert len(started) == 2 and "steps are whole numbers" in at.error[0].value


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
    diff = at.dataframe[3].value  # runs table, evaluation, all results, then the config diff
    assert {"experiment", "kind", "lr"} <= set(diff.index)
    assert "hidden" not in diff.index  # equal in both runs
    assert sorted(diff.loc["experiment"]) == ["ddpm-class", "flow-class"]  # as written, no quotes
    full = at.dataframe[4].value
    assert full.loc["epochs"].tolist() == ["none", "none"]  # None as written (--steps 4)
    assert full.loc["plan.epochs"].tolist() == ["2", "2"]


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
