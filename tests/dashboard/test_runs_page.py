"""AppTest of the Runs page on real tiny runs."""
import shutil

from .conftest import no_errors


def test_runs_page_compares_runs(app, lab_runs):
    at = app(lab_runs).run()
    no_errors(at)
    assert at.title[0].value == "Runs"
    assert [m.label for m in at.multiselect] == ["Experiment", "Dataset", "Tag", "Compare runs"]
    assert sorted(at.multiselect(key="runs_selected").value) == ["ddpm-class", "flow-class"]
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # loss, learning rate, loss by t-bin
    assert '"training loss"' in charts[0].proto.spec and "flow-class" in charts[0].proto.spec
    assert at.select_slider(key="grid_epoch").value == 2 and len(at.image) == 2
    assert at.toggle(key="runs_live").value is False  # both runs finished
    at.select_slider(key="grid_epoch").set_value(1).run()
    captions = sorted(i.captions[0] for i in at.image)
    assert captions == ["ddpm-class · epoch 1", "flow-class · epoch 1"]


def test_evaluation_table(app, lab_runs):
    at = app(lab_runs).run()
    table = at.dataframe[1].value  # runs table, evaluation, config diff
    assert list(table["run"]) == ["flow-class", "flow-class"]
    assert list(table["guidance"]) == ["0", "5"]
    assert {"class accuracy", "Fréchet distance", "Fréchet floor (real vs real)"} <= set(table)
    assert table["Fréchet floor (real vs real)"].notna().all()


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
    at = app(lab_runs, WANDB_MODE="", WANDB_API_KEY="0" * 40,
             DIFFUSION_LAB_WANDB_PROJECT="someone/diffusion-lab").run()
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
    from training.runs import read_summary, write_json

    run = shutil.copytree(lab_runs / "ddpm-class", tmp_path / "runs" / "training-now")
    write_json(run / "summary.json", {**read_summary(run), "status": "running"})
    at = app(tmp_path / "runs").run()
    no_errors(at)
    assert at.toggle(key="runs_live").value is True
    assert at.dataframe[0].value["status"].tolist() == ["running"]


def test_bundled_runs_are_listed_and_tagged(app, lab_runs, tmp_path):
    bundled = tmp_path / "pretrained_runs"
    shutil.copytree(lab_runs / "flow-class", bundled / "flow-class")
    at = app(tmp_path / "no-runs-yet", DIFFUSION_LAB_BUNDLED_RUNS=str(bundled)).run()
    no_errors(at)
    assert at.multiselect(key="runs_selected").value == ["flow-class"]
    assert "bundled" in at.multiselect[2].options  # the tag filter
