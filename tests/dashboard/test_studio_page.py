"""AppTest of the MNIST studio on real tiny runs."""

import io
import shutil

import pytest
import torch

from dashboard.settings import DEFAULT_BUNDLED_RUNS

from .conftest import no_errors


def studio(app, runs_dir):
    at = app(runs_dir).run()
    return at.switch_page("screens/studio.py").run()


def steps_key(at) -> str:
    return next(w.key for w in at.number_input if w.key.startswith("studio_steps"))


def test_studio_samples_digits(app, lab_runs):
    at = studio(app, lab_runs)
    no_errors(at)
    assert at.title[0].value == "MNIST studio"
    assert [s.label for s in at.main.selectbox] == ["Run", "Checkpoint", "Sampler"]
    assert at.button_group(key="studio_digits").options == [str(d) for d in range(10)]  # all
    at.button_group(key="studio_digits").set_value([7, 3])
    at.number_input(key="studio_count").set_value(2)
    at.number_input(key=steps_key(at)).set_value(4)
    at.button[0].click().run()
    no_errors(at)
    run = at.selectbox(key="studio_run").value
    made_by = f"{run} · {at.selectbox(key=f'studio_ckpt_{run}').value}"
    assert at.image[0].captions[0].startswith(f"{made_by} · digits 3, 7")
    assert [d.label for d in at.get("download_button")] == ["Download PNG", "Download GIF"]
    other = "ddpm-class" if run == "flow-class" else "flow-class"
    at.selectbox(key="studio_run").set_value(other).run()  # not this model's samples: a note
    assert not at.image
    assert any(f"The last result came from {made_by}" in c.value for c in at.caption)


def test_studio_choices_outlast_a_visit_to_another_page(app, lab_runs):
    at = studio(app, lab_runs)
    at.selectbox(key="studio_run").set_value("ddpm-class").run()
    at.number_input(key="studio_seed").set_value(7)  # a form: its values count once sampled
    at.number_input(key="studio_steps_ddpm").set_value(2)
    at.button[0].click().run()
    at.switch_page("screens/runs.py").run()
    at.switch_page("screens/studio.py").run()
    no_errors(at)
    assert at.selectbox(key="studio_run").value == "ddpm-class"
    assert at.number_input(key="studio_seed").value == 7


def test_the_checkpoint_picker_follows_the_newest_until_the_user_picks_one(app, lab_runs, tmp_path):
    run = shutil.copytree(lab_runs / "ddpm-class", tmp_path / "ddpm-class")
    at = studio(app, tmp_path)
    assert at.selectbox(key="studio_ckpt_ddpm-class").value == "epoch-0002"  # the latest
    shutil.copytree(run / "checkpoints/epoch-0002", run / "checkpoints/epoch-0003")
    at.switch_page("screens/runs.py").run()
    at = at.switch_page("screens/studio.py").run()
    assert at.selectbox(key="studio_ckpt_ddpm-class").value == "epoch-0003"  # a newer one
    at.selectbox(key="studio_ckpt_ddpm-class").set_value("epoch-0001").run()
    shutil.copytree(run / "checkpoints/epoch-0002", run / "checkpoints/epoch-0004")
    at.switch_page("screens/runs.py").run()
    at = at.switch_page("screens/studio.py").run()
    no_errors(at)
    assert at.selectbox(key="studio_ckpt_ddpm-class").value == "epoch-0001"  # the user's pick


def test_studio_samplers_follow_the_model(app, lab_runs):
    at = studio(app, lab_runs)
    runs = at.selectbox(key="studio_run")
    at = runs.set_value("ddpm-class").run()
    at.selectbox(key="studio_sampler_ddpm").set_value("ddim").run()
    at = at.selectbox(key="studio_run").set_value("flow-class").run()
    assert at.selectbox(key="studio_sampler_flow").options == [
        "euler",
        "heun",
        "dpmpp_2m",
        "ddpm (VP, via VelocityAsEps)",
        "ddim (VP, via VelocityAsEps)",
    ]
    assert any("go through VelocityAsEps" in c.value for c in at.caption)  # said on the page
    assert at.selectbox(key="studio_sampler_flow").value == "heun"  # the fast default
    assert at.number_input(key="studio_steps_flow").value == 50
    at = at.selectbox(key="studio_run").set_value("ddpm-class").run()
    assert at.selectbox(key="studio_sampler_ddpm").options == ["ddpm", "ddim", "dpmpp_2m"]
    assert at.selectbox(key="studio_sampler_ddpm").value == "ddpm"  # strided DDPM, 50 steps
    assert not any("VelocityAsEps" in c.value for c in at.caption)  # its own samplers only
    at.number_input(key="studio_steps_ddpm").set_value(3)
    at.button[0].click().run()
    no_errors(at)
    assert "ddpm · 3 steps" in at.image[0].captions[0]
    snapshots = [caption for caption, _ in at.session_state["studio_result"].snapshots]
    assert snapshots[0] == "denoised estimate at course t = 997 (this model's step 299 of 300)"


@pytest.mark.parametrize(
    "digits, count, shape", [([2, 5], 8, (2, 8)), (list(range(10)), 3, (3, 10))]
)
def test_the_grid_is_wider_than_tall_with_square_cells(app, lab_runs, digits, count, shape):
    """Two digits x eight samples: two rows of eight, not a column eight rows tall."""
    from PIL import Image

    at = studio(app, lab_runs)
    at.button_group(key="studio_digits").set_value(digits)
    at.number_input(key="studio_count").set_value(count)
    at.number_input(key=steps_key(at)).set_value(2)
    at.button[0].click().run()
    no_errors(at)
    width, height = Image.open(io.BytesIO(at.session_state["studio_result"].png)).size
    rows, cols = shape
    assert abs(width / height / (cols / rows) - 1) < 0.1  # `rows` x `cols` square cells


def test_studio_corrupt_checkpoint_is_a_message(app, corrupt_runs):
    at = studio(app, corrupt_runs)
    assert not at.exception
    assert "Cannot load broken" in at.error[0].value
    assert "not a readable safetensors file" in at.error[0].value


def test_an_unreadable_checkpoint_is_named_and_the_picker_offers_the_others(
    app, lab_runs, tmp_path
):
    run = shutil.copytree(lab_runs / "ddpm-class", tmp_path / "ddpm-class")
    (run / "checkpoints/epoch-0002/meta.json").write_text('{"exper')
    at = studio(app, tmp_path)
    assert not at.exception and not at.error
    assert "checkpoints/epoch-0002: meta.json: unreadable (not valid JSON" in at.warning[0].value
    assert at.selectbox(key="studio_ckpt_ddpm-class").options == ["epoch-0001 (step 2)"]


def test_a_run_config_of_the_wrong_type_is_a_message(app, lab_runs, tmp_path):
    run = shutil.copytree(lab_runs / "ddpm-class", tmp_path / "ddpm-class")
    config = (run / "config.json").read_text()
    (run / "config.json").write_text(config.replace('"hidden": 4', '"hidden": "abc"'))
    at = studio(app, tmp_path)
    assert not at.exception
    reason = "config.json: 'hidden' must be an integer; got \"abc\""
    assert f"Run `ddpm-class` is left out: {reason}" in at.warning[0].value


def test_studio_on_a_device_this_machine_lacks_is_a_message(app, lab_runs):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has the Apple GPU that the test asks for as the absent device")
    at = app(lab_runs).run()
    at.selectbox(key="settings_device").set_value("mps").run()
    at.switch_page("screens/studio.py").run()
    assert not at.exception
    assert "no MPS device is available here" in at.error[0].value


def test_studio_no_runs(app, tmp_path):
    at = studio(app, tmp_path)
    no_errors(at)
    assert "No runs yet" in at.info[0].value


def test_concurrent_sessions_get_their_own_results(app, lab_runs):
    """Two sessions sampling at once on the shared cached model get what they get alone."""
    import threading

    def session(seed):
        at = studio(app, lab_runs)
        at.selectbox(key="studio_run").set_value("ddpm-class").run()
        at.number_input(key="studio_steps_ddpm").set_value(10)
        at.number_input(key="studio_count").set_value(1)
        at.number_input(key="studio_seed").set_value(seed)
        return at

    sessions, errors = [session(1), session(2)], []

    def click(at):
        try:  # two sampling reruns share 2 cores with the other test worker: allow them time
            at.button[0].click().run(timeout=120)
        except Exception as e:  # a thread's exception is otherwise lost; fail with it below
            errors.append(e)

    threads = [threading.Thread(target=click, args=(at,)) for at in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    together = [at.session_state["studio_result"].png for at in sessions]
    alone = [
        session(seed).button[0].click().run().session_state["studio_result"].png for seed in (1, 2)
    ]
    assert together == alone and together[0] != together[1]


def test_studio_samples_a_student_with_its_flowmap(app, tmp_path):
    """A distilled student (the bundled one) is offered its flowmap sampler, at its 4 steps."""
    shutil.copytree(DEFAULT_BUNDLED_RUNS / "flow-class-d32-student", tmp_path / "student")
    at = studio(app, tmp_path)
    assert at.selectbox(key="studio_sampler_student").options == ["flowmap"]
    assert at.number_input(key="studio_steps_student").value == 4
    at.button_group(key="studio_digits").set_value([2])
    at.number_input(key="studio_count").set_value(1)
    at.button[0].click().run()
    no_errors(at)
    assert at.image[0].captions[0].startswith("student · epoch-0004 · digits 2")
