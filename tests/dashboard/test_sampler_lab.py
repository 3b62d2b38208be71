"""AppTest of the Sampler lab on the MNIST backend (DeepFloyd IF cannot load without a GPU)."""

import numpy as np
import pytest

from .conftest import no_errors, png

LAB = "screens/sampler_lab.py"


def open_tab(at, name):
    at.session_state["lab_tab"] = name
    return at.run()


def test_backend_falls_back_to_mnist_and_says_why(lab):
    no_errors(lab)
    info = lab.info[0].value
    assert "Backend: MNIST model **flow-class**" in info and "DeepFloyd IF is unavailable" in info
    assert [t.label for t in lab.tabs][:3] == ["Forward process", "Denoising", "Sampling & CFG"]


def test_deepfloyd_unavailable_is_a_message(lab):
    lab.radio(key="lab_backend").set_value("DeepFloyd IF").run()
    assert not lab.exception
    assert lab.error[0].value.startswith("DeepFloyd IF is unavailable:")


@pytest.mark.parametrize(
    "tab, button, caption",
    [
        ("Forward process", "fwd_go", "original · t=250 (75/300) · t=500 (150/300) · t=750"),
        ("Denoising", "den_go", "iterative · one-step · blur"),
        ("Sampling & CFG", "smp_go", "'3' no CFG · '3' CFG 5"),
        ("SDEdit", "sde_go", "i=1 t="),
        ("Visual anagrams", "ana_go", "identity: 6 · flip: 9"),
        ("Hybrids", "hyb_go", "near: 1 · far: 0"),
    ],
)
def test_tab_produces_an_image(lab, tab, button, caption):
    at = open_tab(lab, tab)
    no_errors(at)
    at.button(key=button).click().run()
    no_errors(at)
    assert any(caption in c for img in at.image for c in img.captions)
    assert at.get("download_button")[0].label == "Download PNG"


def test_a_result_is_shown_only_beside_the_model_that_made_it(lab):
    at = open_tab(lab, "Sampling & CFG")
    at.button(key="smp_go").click().run()
    made_by = f"flow-class · {at.selectbox(key='lab_ckpt_flow-class').value}"
    assert any(c.startswith(made_by) for img in at.image for c in img.captions)
    at.selectbox(key="lab_run").set_value("ddpm-class").run()
    no_errors(at)
    assert not at.image and any(
        f"The last result came from {made_by}" in c.value for c in at.caption
    )


def test_denoising_shows_every_method_side_by_side_in_words(lab):
    at = open_tab(lab, "Denoising")
    at.button(key="den_go").click().run()
    no_errors(at)
    captions = [c for img in at.image for c in img.captions]
    assert "original · noisy t=" in captions[0] and "iterative · one-step · blur" in captions[0]
    assert "Noisy, Gaussian blur and one-step denoising at each t" in captions
    assert "Iterative denoising: the chain, every 5th course step" in captions
    assert not any("denoise-" in c for c in captions)  # no internal names


def test_the_time_scale_is_said(lab):
    at = open_tab(lab, "Forward process")
    note = next(c.value for c in at.caption if "course's scale" in c.value)
    assert "this model has 300 steps, so course t = 250 is its step 75" in note


def test_img2img_takes_an_upload(lab):
    at = open_tab(lab, "Text img2img")
    at.radio(key="i2i_source").set_value("Upload").run()
    digit = np.zeros((40, 40), np.uint8)
    digit[8:32, 18:22] = 255
    at.get("file_uploader")[0].set_value(("one.png", png(digit), "image/png")).run()
    no_errors(at)
    assert [img.captions for img in at.image] == [["the upload at 28x28"]]  # cropped, resized
    at.multiselect(key="i2i_i").set_value([5]).run()
    at.button(key="i2i_go").click().run()
    no_errors(at)
    assert at.image[-1].captions  # the result, then its downloads
    assert any("i=5 t=" in c for img in at.image for c in img.captions)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.png", b"these are not pixels", "not an image"),
        ("cut.png", png(np.full((64, 64, 3), 200, np.uint8))[:80], "truncated or corrupt"),
    ],
)
def test_bad_upload_is_a_message(lab, name, data, message):
    at = open_tab(lab, "SDEdit")
    at.radio(key="sde_source").set_value("Upload").run()
    at.get("file_uploader")[0].set_value((name, data, "image/png")).run()
    assert not at.exception
    assert "Cannot use the upload" in at.error[0].value and message in at.error[0].value
    at.radio(key="sde_source").set_value("Example").run()  # the app stays usable
    no_errors(at)


def test_sketch_waits_for_a_drawing(lab):
    at = open_tab(lab, "SDEdit")
    at.radio(key="sde_source").set_value("Sketch").run()
    no_errors(at)
    assert any("Draw on the canvas" in c.value for c in at.caption)


def mask_upload(at, mask):
    at.radio(key="inp_mask_source").set_value("Upload").run()
    at.get("file_uploader")[0].set_value(("mask.png", png(mask), "image/png")).run()
    return at.button(key="inp_go").click().run()


@pytest.mark.parametrize("fill, message", [(0, "mask is empty"), (255, "covers the whole image")])
def test_empty_or_full_mask_is_a_message(lab, fill, message):
    at = open_tab(lab, "Inpainting")
    assert "Paint over the part of the image" in at.info[-1].value  # nothing painted yet
    at = mask_upload(at, np.full((28, 28), fill, np.uint8))
    assert not at.exception
    assert message in at.error[0].value


def test_inpainting_with_an_uploaded_mask(lab):
    at = open_tab(lab, "Inpainting")
    mask = np.zeros((28, 28), np.uint8)
    mask[10:18, 6:22] = 255
    at = mask_upload(at, mask)
    no_errors(at)
    assert any("original · mask · kept · result 1" in c for img in at.image for c in img.captions)


def test_upsampling_needs_deepfloyd(lab):
    at = open_tab(lab, "Upsampling")
    no_errors(at)
    assert "needs DeepFloyd IF" in at.info[-1].value


def test_corrupt_checkpoint_in_the_lab(app, corrupt_runs):
    at = app(corrupt_runs).run()
    at.switch_page(LAB).run()
    assert not at.exception
    assert "Cannot load broken" in at.error[0].value


def test_without_the_runs_dataset_examples_give_way_to_uploads(
    app, lab_runs, tmp_path, mnist_offline
):
    import json
    import shutil

    from training.runs import write_json

    run = shutil.copytree(lab_runs / "flow-class", tmp_path / "elsewhere")
    cfg = json.loads((run / "config.json").read_text())
    plan = {**cfg["plan"], "dataset": "mnist"}  # trained on full MNIST, absent here
    write_json(
        run / "config.json",
        {**cfg, "dataset": "mnist", "data_root": str(tmp_path / "none"), "plan": plan},
    )
    at = app(tmp_path).run()
    at.switch_page(LAB).run()
    at = open_tab(at, "Forward process")
    assert not at.exception
    assert at.error[0].value.startswith(
        "No built-in example images (upload or sketch one): the "
        "built-in examples are test digits of the run's dataset"
    )
    assert at.radio(key="fwd_source").options == ["Upload"]
    at = open_tab(at, "Sampling & CFG")  # tabs without an input image still work
    at.button(key="smp_go").click().run()
    assert not at.exception and at.image
