"""make_figures on tiny fake runs of each kind, and its drawing helpers."""

import numpy as np
import pytest
import torch
from PIL import Image

from samplers.app.images import save_gif
from training.figures import SIGMAS, grid_array, make_figures, plot_loss


def _names(paths):
    return sorted(p.name for p in paths)


def test_grid_array_layout():
    a = grid_array(torch.ones(12, 1, 28, 28), nrow=10)
    assert a.dtype == np.uint8 and a.shape == (2 * 30 + 2, 10 * 30 + 2)
    assert a[0, 0] == 128 and a[2, 2] == 255
    assert grid_array(torch.zeros(2, 1, 28, 28), 2, scale=2).shape == (64, 124)


def test_save_gif_holds_last_frame(tmp_path):
    frames = [np.full((8, 8), v, np.uint8) for v in (0, 100, 255)]
    path = save_gif(frames, tmp_path / "a.gif", duration_ms=40, hold_ms=900)
    with Image.open(path) as im:
        assert im.n_frames == 3
        im.seek(2)
        assert im.info["duration"] == 900


def test_plot_loss_without_metrics(tmp_path):
    assert plot_loss(tmp_path, tmp_path / "loss.png", "x") is None


def test_denoiser_figures(fake_run):
    run = fake_run("denoiser", epochs=(1, 3, 5))
    paths = make_figures(run, device="cpu")
    assert _names(paths) == [
        "denoise-epoch-0001.png",
        "denoise-epoch-0005.png",
        "loss.png",
        "noising-sigmas.png",
        "ood-sigmas.png",
    ]
    assert all(p.parent == run / "figures" and p.stat().st_size > 1000 for p in paths)
    assert len(SIGMAS) == 7


def test_pure_noise_figures(fake_run):
    paths = make_figures(fake_run("pure-noise", epochs=(2,)), device="cpu")
    assert _names(paths) == [
        "loss.png",
        "pure-noise-epoch-0002.png",
    ]  # no epoch 1/5: the one there is


@pytest.mark.parametrize("experiment", ["ddpm-class", "flow-time"])
def test_sample_figures_and_gif(fake_run, experiment):
    run = fake_run(experiment, epochs=(1, 2, 5))
    paths = make_figures(run, device="cpu", steps=3)
    assert _names(paths) == [
        "loss.png",
        "samples-epoch-0001.png",
        "samples-epoch-0005.png",
        "sampling.gif",
    ]
    with Image.open(run / "figures" / "sampling.gif") as im:
        assert im.n_frames == 4 and im.size == (2 * (10 * 30 + 2), 2 * (4 * 30 + 2))


def test_figures_of_a_run_stopped_in_its_first_epoch(fake_run):
    run = fake_run("ddpm-class", epochs=(1,))
    # its only checkpoint as a SIGTERM after step 5 of epoch 1 names it
    (run / "checkpoints/epoch-0001").rename(run / "checkpoints/epoch-0000-step-00000005")
    paths = make_figures(run, device="cpu", steps=3)
    assert _names(paths) == ["loss.png", "samples-epoch-0000.png", "sampling.gif"]


def test_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        make_figures(tmp_path)
