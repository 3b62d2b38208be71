"""The runs shipped in training/pretrained_runs/ (what a fresh `make dashboard` opens on) load with
verified checksums and draw the digits they are asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samplers.app.devices import resolve_mixed_precision
from training.data import load_dataset
from training.pretrained import load_lab_model

BUNDLED = Path(__file__).resolve().parents[2] / "training" / "pretrained_runs"
RUNS = sorted(p.name for p in BUNDLED.iterdir() if (p / "config.json").is_file())
# fewer steps than the lab default (training.config.FAST_SAMPLER): enough for this check; a
# distilled student takes its own flowmap sampler
QUICK_SAMPLER = {"flow": ("heun", 10), "ddpm": ("ddpm", 20)}


def nearest_neighbour_labels(
    images: torch.Tensor, train_images: torch.Tensor, train_labels: torch.Tensor
) -> torch.Tensor:
    """1-NN class in pixel space: images (B, 28, 28) in [0, 1] against uint8 (N, 28, 28)."""
    ref = train_images.flatten(1).float() / 255
    return train_labels[torch.cdist(images.flatten(1), ref).argmin(dim=1)]


def test_the_first_run_has_both_model_kinds():
    assert {"flow-class-d32", "ddpm-class-d32"} <= set(RUNS)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("run", RUNS)
def test_bundled_run_draws_the_requested_digits(run, device):
    lab = load_lab_model(
        BUNDLED / run, device=device
    )  # raises on a checksum mismatch or a missing file
    assert lab.precision == resolve_mixed_precision("auto", torch.device(device))
    sampler, steps = ("flowmap", 4) if lab.config.is_student else QUICK_SAMPLER[lab.kind]
    labels = torch.arange(10).repeat(3)
    x = lab.sample(
        labels,
        guidance_scale=5,
        sampler=sampler,
        steps=steps,
        generator=torch.Generator().manual_seed(0),
    )
    assert x.device.type == device and x.shape == (30, 1, 28, 28) and torch.isfinite(x).all()
    train = load_dataset("mnist-5k", split="train")
    predicted = nearest_neighbour_labels(
        (x.float().cpu().squeeze(1) + 1) / 2, train.images, train.labels
    )
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.8, f"{run}: only {accuracy:.0%} of 30 samples look like their class"
