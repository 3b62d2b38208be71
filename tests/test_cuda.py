"""The lab on a CUDA GPU: precision choice, a fast-recipe run, exact resume, sampling.

`make gpu-check` (tests/device_check.sh) runs these on a GPU machine. Everywhere else they are
skipped with that reason: tests/conftest.py hides GPUs from the suite unless CUDA_VISIBLE_DEVICES
is set.
"""
import pytest
import torch
from safetensors.torch import load_file

from samplers.devices import resolve_device, resolve_mixed_precision
from training import cli
from training.checkpoints import latest_checkpoint
from training.data import load_dataset
from training.pretrained import load_lab_model
from training.runs import read_config, read_metrics, read_summary

from .training.test_bundled_runs import BUNDLED, QUICK_SAMPLER, RUNS, nearest_neighbour_labels

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a visible CUDA device (the suite hides GPUs unless "
    "CUDA_VISIBLE_DEVICES is set; make gpu-check sets it)")]

TINY = ["--dataset", "mnist-5k", "--hidden", "8", "--batch-size", "16", "--period-steps", "3",
        "--preview-steps", "2", "--log-every", "1", "--wandb-mode", "disabled", "--steps", "9",
        "--device", "cuda"]


def _train(runs, experiment, name, *extra) -> int:
    return cli.main([experiment, *TINY, "--runs-dir", str(runs), "--name", name, *extra])


def test_auto_precision_is_the_gpus_native_half_precision():
    native = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_mixed_precision("auto", resolve_device("cuda")) == native


@pytest.mark.parametrize("experiment", ["flow-class", "ddpm-class"])
def test_fast_recipe_trains_on_the_gpu_in_half_precision(tmp_path, experiment):
    assert _train(tmp_path, experiment, "run", "--recipe", "fast") == 0
    run = tmp_path / "run"
    extra = read_config(run)["extra"]
    assert extra["device"].startswith("cuda")
    assert extra["mixed_precision"] == resolve_mixed_precision("auto", resolve_device("cuda"))
    losses = [r["loss"] for r in read_metrics(run)]
    assert len(losses) == 9 and all(torch.isfinite(torch.tensor(losses)))
    lab = load_lab_model(run, device="cpu")  # a GPU run's checkpoint samples on the CPU too
    sampler, _ = QUICK_SAMPLER[lab.kind]
    x = lab.sample(torch.arange(10), guidance_scale=5, sampler=sampler, steps=2,
                   generator=torch.Generator().manual_seed(0))
    assert x.shape == (10, 1, 28, 28) and torch.isfinite(x).all()


def test_stopped_and_resumed_gpu_run_is_bit_identical(tmp_path):
    extra = ("--recipe", "fast", "--warmup-steps", "2")  # per-step LambdaLR + EMA
    assert _train(tmp_path, "flow-class", "full", *extra) == 0
    assert _train(tmp_path, "flow-class", "cut", *extra, "--stop-after", "1") == 0
    assert latest_checkpoint(tmp_path / "cut").period == 1
    assert _train(tmp_path, "flow-class", "cut", *extra, "--resume") == 0
    assert read_summary(tmp_path / "cut")["status"] == "finished"
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "full/checkpoints/epoch-0003" / name)
        b = load_file(tmp_path / "cut/checkpoints/epoch-0003" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("run", RUNS)
def test_bundled_run_draws_the_requested_digits_on_the_gpu(run):
    lab = load_lab_model(BUNDLED / run, device="cuda")
    assert lab.precision == resolve_mixed_precision("auto", resolve_device("cuda"))
    sampler, steps = QUICK_SAMPLER[lab.kind]
    labels = torch.arange(10).repeat(3)
    x = lab.sample(labels, guidance_scale=5, sampler=sampler, steps=steps,
                   generator=torch.Generator().manual_seed(0))
    assert x.device.type == "cuda" and x.shape == (30, 1, 28, 28) and torch.isfinite(x).all()
    train = load_dataset("mnist-5k", split="train")
    predicted = nearest_neighbour_labels((x.float().cpu().squeeze(1) + 1) / 2, train.images, train.labels)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.8, f"{run}: only {accuracy:.0%} of 30 samples look like their class"
