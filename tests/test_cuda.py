"""The lab on a CUDA GPU: the precision `auto` picks and a fast-recipe run in it.

Exact resume and sampling on the GPU are the CPU tests' `cuda` cases (tests/training/test_resume.py,
test_bundled_runs.py). `make gpu-check` (tests/device_check.sh) runs all tests marked `cuda` on a
GPU machine; elsewhere tests/conftest.py skips them with that reason.
"""

import pytest
import torch

from samplers.app.devices import resolve_device, resolve_mixed_precision
from training import cli
from training.pretrained import load_lab_model
from training.runs import load_run_config, read_metrics

from .training.test_bundled_runs import QUICK_SAMPLER

pytestmark = pytest.mark.cuda

TINY = [
    "--dataset",
    "mnist-5k",
    "--hidden",
    "8",
    "--batch-size",
    "16",
    "--preview-steps",
    "2",
    "--log-every",
    "1",
    "--wandb-mode",
    "disabled",
    "--steps",
    "9",
    "--device",
    "cuda",
]


def test_auto_precision_is_the_gpus_native_half_precision():
    native = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_mixed_precision("auto", resolve_device("cuda")) == native


@pytest.mark.parametrize("experiment", ["flow-class", "ddpm-class"])
def test_fast_recipe_trains_on_the_gpu_in_half_precision(tmp_path, experiment):
    assert (
        cli.main(
            [experiment, *TINY, "--recipe", "fast", "--runs-dir", str(tmp_path), "--name", "run"]
        )
        == 0
    )
    run = tmp_path / "run"
    plan = load_run_config(run).plan
    assert plan.device.startswith("cuda")
    assert plan.mixed_precision == resolve_mixed_precision("auto", resolve_device("cuda"))
    losses = [r["loss"] for r in read_metrics(run)]
    assert len(losses) == 9 and all(torch.isfinite(torch.tensor(losses)))
    lab = load_lab_model(run, device="cpu")  # a GPU run's checkpoint samples on the CPU too
    sampler, _ = QUICK_SAMPLER[lab.kind]
    x = lab.sample(
        torch.arange(10),
        guidance_scale=5,
        sampler=sampler,
        steps=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert x.shape == (10, 1, 28, 28) and torch.isfinite(x).all()
