"""`python -m samplers`: every Part A task end to end on the tiny IF (CPU, 6 strided steps) and on
a bundled MNIST run through the real MnistBackend, the files each writes, reproducibility, and
clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import samplers
from samplers.app import tasks
from samplers.app.backends import Backend
from samplers.app.cli import main
from samplers.schedules import alpha_bar

SD = 0.3
CUDA = pytest.param("cuda", marks=pytest.mark.cuda)


class GaussianDigits:
    """The Backend protocol on the exact noise predictor for data ~ N(mu_c, SD^2 I), with a mean
    per digit class (mu = 0 for the null class), on MNIST's T = 300 linear schedule."""

    name, image_size, channels, dtype = "gaussian", 28, 1, torch.float32
    default_prompt, prompts, default_guidance_scale, can_upsample = (
        "",
        ("", *"0123456789"),
        5.0,
        False,
    )

    def __init__(self, run_dir, checkpoint=None, device="cpu"):
        self.device = torch.device(device)
        self.alphas_cumprod = samplers.linear_alphas_cumprod()
        self.timesteps = samplers.spaced_timesteps(300, 10)

    def __call__(self, x, t, cond):
        mu = 0.0 if cond is None else (cond @ torch.linspace(-0.9, 0.9, 10)).view(-1, 1, 1, 1)
        a = alpha_bar(self.alphas_cumprod, t, x)
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * SD**2 + 1 - a)

    def encode(self, prompts):
        if any(p not in ("", *map(str, range(10))) for p in prompts):
            raise ValueError(f"MNIST prompts are the digits '0'..'9' or ''; got {list(prompts)}")
        return torch.stack([torch.zeros(10) if p == "" else torch.eye(10)[int(p)] for p in prompts])

    def example_images(self):
        return {f"digit-{k}": torch.full((1, 1, 28, 28), -0.9 + 0.2 * k) for k in range(10)}

    def upsample(self, images, prompts, *, generator=None):
        raise NotImplementedError("the mnist backend has no super-resolution stage")


BUNDLED = Path(__file__).resolve().parents[2] / "training" / "pretrained_runs"


@pytest.fixture
def mnist():
    """A bundled DDPM run through the real MnistBackend, on a short schedule."""
    return ["--backend", "mnist", "--run", str(BUNDLED / "ddpm-class-d32"), "--steps", "6"]


@pytest.fixture
def tiny(tiny_if):
    return [
        "--model-dir",
        str(tiny_if.stage1),
        "--stage2-dir",
        str(tiny_if.stage2),
        "--stride",
        "198",
    ]


def run(argv, out, capsys) -> list[str]:
    """Run the CLI; return the written file names (checked to exist)."""
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    names = [line.rsplit("/", 1)[-1] for line in capsys.readouterr().out.split()]
    for name in names:
        assert (out / name).stat().st_size > 0
    return names


IF_TASKS = {
    "forward": ([], ["forward-astronaut.png", "forward.json"]),
    "denoise": (
        [],
        [
            "denoise-onestep-astronaut.png",
            "denoise-iterative-astronaut.png",
            "denoise-iterative-astronaut.gif",
            "denoise-compare-astronaut.png",
            "denoise.json",
        ],
    ),
    "sample": (["--n", "2"], ["sample.png", "sample.gif", "sample.json"]),
    "sdedit": (
        ["--examples", "sketch", "--levels", "1", "10", "20"],
        ["sdedit-sketch.png", "sdedit.json"],
    ),
    "img2img": (
        ["--examples", "cat", "--prompt", "a rocket ship", "--levels", "20"],
        ["img2img-cat.png", "img2img.json"],
    ),
    "inpaint": (["--examples", "astronaut", "--n", "2"], ["inpaint-astronaut.png", "inpaint.json"]),
    "anagram": (
        ["--prompts", "a photo of a dog", "a photo of a man", "--views", "flip"],
        ["anagram.png", "anagram.json"],
    ),
    "hybrid": (
        ["--far", "a lithograph of a skull", "--near", "a rocket ship"],
        ["hybrid.png", "hybrid.json"],
    ),
    "upsample": (
        ["--prompts", "a rocket ship", "--upsample-steps", "2"],
        ["upsample.png", "upsample.json"],
    ),
}


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("task", list(IF_TASKS))
def test_every_task_on_the_tiny_if(task, device, tiny, tmp_path, capsys):
    """On CUDA in fp16, IF's default there (the tiny IF has fp32 weight files only)."""
    extra, expected = IF_TASKS[task]
    assert run([task, *tiny, *extra, "--device", device], tmp_path, capsys) == expected
    record = json.loads((tmp_path / f"{task}.json").read_text())
    assert record["task"] == task and record["seed"] == 180
    assert record["timesteps"] == [990, 792, 594, 396, 198, 0]
    with Image.open(tmp_path / expected[0]) as img:
        assert img.mode == "RGB" and min(img.size) >= 128


def test_same_seed_same_figure(tiny, tmp_path, capsys):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        run(["sample", *tiny, "--n", "1", "--seed", seed], tmp_path / name, capsys)
    png = {n: np.asarray(Image.open(tmp_path / n / "sample.png")) for n in "abc"}
    np.testing.assert_array_equal(png["a"], png["b"])
    assert not np.array_equal(png["a"], png["c"])


def test_user_images_masks_and_imported_embeddings(tiny, tmp_path, capsys, monkeypatch):
    photo = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    mask = np.zeros((50, 70), np.uint8)
    mask[10:30, 20:50] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    torch.save(
        {"a pencil": torch.randn(1, 77, 32).half(), "": torch.randn(1, 77, 32).half()},
        tmp_path / "prompt_embeds_dict.pth",
    )
    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", None)  # T5 must not load
    argv = [
        "inpaint",
        *tiny,
        "--image",
        str(tmp_path / "photo.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--prompt",
        "a pencil",
        "--import-embeds",
        str(tmp_path / "prompt_embeds_dict.pth"),
    ]
    assert run(argv, tmp_path / "out", capsys) == ["inpaint-photo.png", "inpaint.json"]


MNIST_TASKS = {
    "forward": [],
    "denoise": ["--prompt", "3"],
    "sample": ["--prompt", "7", "--n", "3"],
    "sdedit": ["--prompt", "1"],
    "img2img": ["--prompt", "8", "--examples", "digit-0"],
    "inpaint": ["--prompt", "2"],
    "anagram": ["--prompts", "6", "9", "--views", "rotate_180"],
    "hybrid": ["--far", "0", "--near", "1"],
}


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("task", list(MNIST_TASKS))
def test_every_task_on_an_mnist_backend(task, device, mnist, tmp_path, capsys):
    names = run([task, *mnist, *MNIST_TASKS[task], "--device", device], tmp_path, capsys)
    assert f"{task}.json" in names and any(n.endswith(".png") for n in names)


@pytest.mark.parametrize(
    "task, sampler", [("sample", "ddim"), ("sample", "dpmpp_2m"), ("sdedit", "dpmpp_2m")]
)
def test_tasks_walk_the_schedule_with_the_chosen_sampler(task, sampler, mnist, tmp_path, capsys):
    names = run([task, *mnist, "--prompt", "4", "--sampler", sampler], tmp_path, capsys)
    assert f"{task}.json" in names
    assert json.loads((tmp_path / f"{task}.json").read_text())["sampler"] == sampler


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_another_sampler_follows_the_class_too(sampler):
    backend = GaussianDigits("x")
    (fig,) = tasks.sample(
        backend,
        generator=tasks.make_generator(0),
        schedule=tasks.backend_schedule(backend),
        prompt="9",
        n=256,
        sampler=sampler,
    )
    plain, guided = (row.mean().item() for row in fig.rows)
    # deterministic from N(0, I), they keep the bias of a schedule that ends at ab = 0.048, not
    # at pure noise (0.85 for both; DDPM's fresh noise washes it out)
    assert abs(plain - 0.9) < 0.1, plain
    assert guided > plain + 0.5, guided
    with pytest.raises(ValueError, match="sampler 'euler' walks flow schedules only"):
        tasks.sample(
            backend,
            generator=tasks.make_generator(0),
            schedule=tasks.backend_schedule(backend),
            prompt="9",
            sampler="euler",
        )


@pytest.mark.parametrize(
    "argv", [["--help"], ["sample", "--help"], ["sample", "--sampler", "euler", "--out", "x"]]
)
def test_help_and_usage_errors_load_neither_torch_nor_training(argv):
    """The parser is built from torch-free modules: the answer comes before torch loads."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "samplers", *argv],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == (0 if "--help" in argv else 2), proc.stderr[-500:]
    assert "--sampler {ddpm,ddim,dpmpp_2m}" in proc.stdout + proc.stderr or argv == ["--help"]
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "samplers" in imported
    assert not imported & {"torch", "training", "dashboard", "numpy", "PIL"}


def test_guidance_defaults_to_the_backends_own(tiny, tmp_path, capsys):
    import shutil

    from training.runs import write_json

    mnist_run = shutil.copytree(BUNDLED / "ddpm-class-d32", tmp_path / "run")
    config = json.loads((mnist_run / "config.json").read_text())
    write_json(mnist_run / "config.json", {**config, "guidance_scale": 3.0})  # the run's own
    run(
        ["sample", "--backend", "mnist", "--run", str(mnist_run), "--steps", "2", "--n", "1"],
        tmp_path / "mnist",
        capsys,
    )
    assert json.loads((tmp_path / "mnist/sample.json").read_text())["guidance_scale"] == 3.0
    run(["sample", *tiny, "--n", "1"], tmp_path / "if", capsys)
    assert json.loads((tmp_path / "if/sample.json").read_text())["guidance_scale"] == 7.0


def test_mnist_sample_follows_the_class():
    backend = GaussianDigits("x")
    assert isinstance(backend, Backend)
    (fig,) = tasks.sample(
        backend,
        generator=tasks.make_generator(0),
        schedule=tasks.backend_schedule(backend),
        prompt="9",
        n=256,
    )
    plain, guided = (row.mean().item() for row in fig.rows)
    assert abs(plain - 0.9) < 0.05, plain  # the class mean of the exact model
    assert guided > plain + 0.5, guided  # CFG pushes further from the null class (mean 0)


def test_course_levels_map_to_any_schedule():
    if_like = GaussianDigits("x")
    if_like.alphas_cumprod = torch.ones(1000)
    course = samplers.Schedule.vp(if_like.alphas_cumprod, samplers.strided_timesteps())
    assert [tasks.level_index(if_like, course, i) for i in (1, 10, 20)] == [1, 10, 20]
    mnist = GaussianDigits("x")
    assert [tasks.scaled_t(mnist, t) for t in (250, 500, 750)] == [75, 150, 225]
    full = samplers.Schedule.vp(mnist.alphas_cumprod, samplers.spaced_timesteps(300, 300))
    assert full.times[tasks.level_index(mnist, full, 10)] == 207  # course t = 690 -> 207 of 300


ERRORS = [
    (["img2img"], "img2img needs --prompt"),
    (["sdedit", "--examples", "campanile"], "unknown example"),
    (["sdedit", "--levels", "33"], "levels index the course's 34 strided timesteps"),
    (["anagram", "--views", "spin"], "unknown view 'spin'"),
    (
        ["anagram", "--prompts", "a", "b", "c", "--views", "flip"],
        "at least 2 prompts and one view each",
    ),
    (["inpaint", "--mask", "m.png"], "--mask goes with --image"),
    (["forward", "--ts", "1000"], "0..999 scale"),
    (["forward", "--run", "runs/x"], "--run is for --backend mnist"),
]


@pytest.mark.parametrize("argv, message", ERRORS)
def test_bad_options_are_clear(argv, message, tiny, tmp_path, capsys):
    assert main([argv[0], *tiny, *argv[1:], "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


USAGE_ERRORS = [
    (
        ["sdedit", "--guidance-scale", "nan"],
        "argument --guidance-scale: expected a finite number, got 'nan'",
    ),
    (
        ["sdedit", "--image", "a.png", "--examples", "campanile"],
        "argument --examples: not allowed with argument --image",
    ),
    (["hybrid", "--kernel-size", "-3"], "argument --kernel-size: must be positive, got -3"),
    (["denoise", "--sigma", "0"], "argument --sigma: must be positive, got 0"),
    (["sample", "--steps", "1.5"], "argument --steps: expected a whole number, got '1.5'"),
    (
        ["sample", "--sampler", "heun"],
        "argument --sampler: sampler 'heun' walks flow schedules only; for a model that predicts "
        "noise (vp) choose from ddpm, ddim, dpmpp_2m",
    ),
    (["anagram", "--sampler", "rk4"], "unknown sampler 'rk4'; choose from ddpm, ddim, dpmpp_2m"),
    (["inpaint", "--sampler", "ddim"], "unrecognized arguments: --sampler ddim"),  # DDPM only
]


@pytest.mark.parametrize("argv, message", USAGE_ERRORS)
def test_bad_values_are_usage_errors_before_anything_loads(argv, message, tiny, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([argv[0], *tiny, *argv[1:], "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_inputs_and_backends(tiny, mnist, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    notes = ["--image", str(tmp_path / "notes.txt"), "--out", str(tmp_path)]
    assert main(["sdedit", *tiny, *notes]) == 2
    assert "is not an image file" in capsys.readouterr().err
    assert main(["inpaint", *tiny, *notes]) == 2
    assert "one --mask per --image" in capsys.readouterr().err
    assert main(["sample", "--backend", "mnist", "--out", str(tmp_path)]) == 2
    assert "--backend mnist needs --run" in capsys.readouterr().err
    assert main(["upsample", *mnist, "--prompts", "3", "--out", str(tmp_path)]) == 2
    assert "no super-resolution stage" in capsys.readouterr().err
    assert main(["sample", *mnist, "--prompt", "a cat", "--out", str(tmp_path)]) == 2
    assert "MNIST prompts are the digits" in capsys.readouterr().err
    assert main(["sdedit", *mnist, "--image", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert f"cannot read {tmp_path}: Is a directory" in capsys.readouterr().err
    (tmp_path / "taken").write_text("a file where the output folder should go")
    assert main(["sample", *mnist, "--out", str(tmp_path / "taken")]) == 2
    assert "File exists" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text().startswith("a file")  # untouched
    with pytest.raises(SystemExit) as exit_:
        main(["sample", *mnist, "--n", "0", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "must be positive, got 0" in capsys.readouterr().err


def test_mnist_examples_without_the_dataset_say_what_to_do(tmp_path, capsys, mnist_offline):
    import shutil

    from training.runs import write_json

    run = tmp_path / "run"
    shutil.copytree(BUNDLED / "ddpm-class-d32", run)
    cfg = json.loads((run / "config.json").read_text())
    write_json(
        run / "config.json", {**cfg, "dataset": "mnist", "data_root": str(tmp_path / "none")}
    )
    assert main(["forward", "--backend", "mnist", "--run", str(run), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the built-in examples are test digits of the run's dataset" in err
    assert "use images of your own instead" in err


def test_no_weights_fails_fast_with_the_access_message(tmp_path, capsys):
    assert main(["sample", "--model", "XL", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "DeepFloyd/IF-I-XL-v1.0" in err and "hf auth login" in err
