"""The Sampler lab and `python -m samplers` are one implementation: for the same inputs, options
and seed, each task's page result is the CLI's figure pixel for pixel (MNIST backend, tiny IF)."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from dashboard.settings import DEFAULT_BUNDLED_RUNS
from samplers.app.cli import main

from .conftest import no_errors, png

LAB = "screens/sampler_lab.py"
SEED = ["--seed", "0"]  # CFG: the page's and the CLI's default, the run's 5 (denoise: none)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def cli_figure(argv, out, name) -> np.ndarray:
    assert main([*argv, "--out", str(out)]) == 0
    return pixels((out / name).read_bytes())


def page_result(at, tab, button, key, setup=()) -> np.ndarray:
    at.session_state["lab_tab"] = tab
    at.run()
    for step in setup:
        step(at)
    at.button(key=button).click().run(timeout=180)  # a whole task on the CPU
    no_errors(at)
    return pixels(at.session_state[key].png)


DIGIT = np.zeros((28, 28), np.uint8)
DIGIT[6:22, 12:16] = 255
MASK = np.zeros((28, 28), np.uint8)
MASK[4:14, 4:24] = 255


def upload(key, data, index=0):
    def step(at):
        at.radio(key=f"{key}_source").set_value("Upload").run()
        at.get("file_uploader")[index].set_value(("input.png", data, "image/png")).run()

    return step


MNIST_TASKS = {  # task: (CLI options, CLI file, page tab, button, result key, page set-up)
    "forward": (
        ["--examples", "digit-0"],
        "forward-digit-0.png",
        "Forward process",
        "fwd_go",
        "fwd_result",
        (),
    ),
    "denoise": (
        ["--examples", "digit-0"],
        "denoise-compare-digit-0.png",
        "Denoising",
        "den_go",
        "den_result",
        (),
    ),
    "sample": (
        ["--prompt", "3", "--n", "4"],
        "sample.png",
        "Sampling & CFG",
        "smp_go",
        "smp_result",
        (),
    ),
    "sdedit": (
        ["--examples", "digit-0"],
        "sdedit-digit-0.png",
        "SDEdit",
        "sde_go",
        "sde_result",
        (),
    ),
    "img2img": (
        ["--examples", "digit-0", "--prompt", "7"],
        "img2img-digit-0.png",
        "Text img2img",
        "i2i_go",
        "i2i_result",
        (),
    ),
    "anagram": (
        ["--prompts", "6", "9", "--views", "flip"],
        "anagram.png",
        "Visual anagrams",
        "ana_go",
        "ana_result",
        (),
    ),
    "hybrid": (["--far", "0", "--near", "1"], "hybrid.png", "Hybrids", "hyb_go", "hyb_result", ()),
    "inpaint": (
        ["--image", "IMAGE", "--mask", "MASK"],
        "inpaint-input.png",
        "Inpainting",
        "inp_go",
        "inp_result",
        (upload("inp", png(DIGIT)), upload("inp_mask", png(MASK), 1)),
    ),
}


@pytest.mark.parametrize("task", list(MNIST_TASKS))
def test_page_equals_cli_on_the_mnist_backend(task, lab, lab_runs, tmp_path):
    options, name, tab, button, key, setup = MNIST_TASKS[task]
    (tmp_path / "input.png").write_bytes(png(DIGIT))
    (tmp_path / "mask.png").write_bytes(png(MASK))
    files = {"IMAGE": str(tmp_path / "input.png"), "MASK": str(tmp_path / "mask.png")}
    options = [files.get(o, o) for o in options]
    argv = [task, "--backend", "mnist", "--run", str(lab_runs / "flow-class"), *SEED, *options]
    expected = cli_figure(argv, tmp_path / "cli", name)
    np.testing.assert_array_equal(page_result(lab, tab, button, key, setup), expected)


def test_denoise_with_cfg_on_the_page_equals_the_cli_option(app, tmp_path):
    # the bundled run: a tiny run's class input moves its output by about 3e-6 in fp32, so
    # guidance would change no pixel (under bf16 only rounding noise would)
    run = DEFAULT_BUNDLED_RUNS / "flow-class-d32"
    argv = ["denoise", "--backend", "mnist", "--run", str(run), *SEED]
    argv += ["--examples", "digit-0", "--prompt", "3"]  # CFG against the null class needs a class
    name = "denoise-compare-digit-0.png"
    guided = cli_figure([*argv, "--guidance-scale", "5"], tmp_path / "cfg", name)
    assert not np.array_equal(guided, cli_figure(argv, tmp_path / "cli", name))
    assert json.loads((tmp_path / "cfg" / "denoise.json").read_text())["guidance_scale"] == 5
    assert json.loads((tmp_path / "cli" / "denoise.json").read_text())["guidance_scale"] == 1
    at = app(tmp_path / "runs", DIFFUSION_LAB_BUNDLED_RUNS=str(run.parent)).run()
    at.switch_page(LAB).run()
    at.selectbox(key="lab_run").set_value(run.name).run()
    setup = (
        lambda at: at.selectbox(key="den_prompt").set_value("3").run(),
        lambda at: at.toggle(key="den_cfg").set_value(True).run(),
    )
    np.testing.assert_array_equal(
        page_result(at, "Denoising", "den_go", "den_result", setup), guided
    )


def test_an_inverted_upload_on_the_page_equals_the_cli_option(lab, lab_runs, tmp_path):
    drawing = png(255 - DIGIT)  # dark ink on light paper
    (tmp_path / "input.png").write_bytes(drawing)
    argv = [
        "sdedit",
        "--backend",
        "mnist",
        "--run",
        str(lab_runs / "flow-class"),
        *SEED,
        "--image",
        str(tmp_path / "input.png"),
        "--invert",
    ]
    expected = cli_figure(argv, tmp_path / "cli", "sdedit-input.png")
    setup = (upload("sde", drawing), lambda at: at.toggle(key="sde_invert").set_value(True).run())
    np.testing.assert_array_equal(
        page_result(lab, "SDEdit", "sde_go", "sde_result", setup), expected
    )


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory):
    from tests.fixtures.tiny_if import build_tiny_if

    return build_tiny_if(tmp_path_factory.mktemp("tiny-if"))


PHOTO = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
IF_MASK = np.zeros((32, 32), np.uint8)
IF_MASK[8:20, 10:24] = 255
IF_TASKS = {  # as MNIST_TASKS, with the page's defaults for a text backend
    "forward": (
        ["--examples", "astronaut"],
        "forward-astronaut.png",
        "Forward process",
        "fwd_go",
        "fwd_result",
        (),
    ),
    "denoise": (
        ["--examples", "astronaut"],
        "denoise-compare-astronaut.png",
        "Denoising",
        "den_go",
        "den_result",
        (),
    ),
    "sample": (
        ["--prompt", "an oil painting of a snowy mountain village", "--n", "4"],
        "sample.png",
        "Sampling & CFG",
        "smp_go",
        "smp_result",
        (),
    ),
    "sdedit": (
        ["--examples", "astronaut"],
        "sdedit-astronaut.png",
        "SDEdit",
        "sde_go",
        "sde_result",
        (),
    ),
    "img2img": (
        ["--examples", "astronaut", "--prompt", "a rocket ship"],
        "img2img-astronaut.png",
        "Text img2img",
        "i2i_go",
        "i2i_result",
        (),
    ),
    "inpaint": (
        ["--image", "IMAGE", "--mask", "MASK"],
        "inpaint-input.png",
        "Inpainting",
        "inp_go",
        "inp_result",
        (upload("inp", png(PHOTO)), upload("inp_mask", png(IF_MASK), 1)),
    ),
    "anagram": ([], "anagram.png", "Visual anagrams", "ana_go", "ana_result", ()),
    "hybrid": ([], "hybrid.png", "Hybrids", "hyb_go", "hyb_result", ()),
    "upsample": (
        ["--prompts", "an oil painting of a snowy mountain village"],
        "upsample.png",
        "Upsampling",
        "up_go",
        "up_result",
        (),
    ),
}


@pytest.mark.parametrize("task", list(IF_TASKS))
def test_page_equals_cli_on_the_tiny_if(task, app, lab_runs, tiny_if, tmp_path):
    options, name, tab, button, key, setup = IF_TASKS[task]
    (tmp_path / "input.png").write_bytes(png(PHOTO))
    (tmp_path / "mask.png").write_bytes(png(IF_MASK))
    files = {"IMAGE": str(tmp_path / "input.png"), "MASK": str(tmp_path / "mask.png")}
    cache = str(tmp_path / "cache")
    at = app(
        lab_runs,
        DIFFUSION_LAB_IF_MODEL=str(tiny_if.stage1),
        DIFFUSION_LAB_IF_STAGE2=str(tiny_if.stage2),
        DIFFUSION_LAB_CACHE=cache,
    ).run()
    at.switch_page(LAB).run()
    at.radio(key="lab_backend").set_value("DeepFloyd IF").run()
    at.slider(key="lab_cfg").set_value(7.0).run()
    page = page_result(at, tab, button, key, setup)
    argv = [
        task,
        "--model-dir",
        str(tiny_if.stage1),
        "--stage2-dir",
        str(tiny_if.stage2),
        "--device",
        "cpu",
        "--cache-dir",
        cache,
        "--seed",
        "0",
        *[files.get(o, o) for o in options],
    ]
    np.testing.assert_array_equal(page, cli_figure(argv, tmp_path / "cli", name))
