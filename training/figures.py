"""Every course deliverable of a run, regenerated from its record into ``runs/<name>/figures/``.

``make_figures(run_dir)`` writes, by the run's kind (docs/course.md 3.5-3.7):
  all runs          loss.png (log scale, smoothed; with the loss by t bin when logged)
  denoiser          noising-sigmas.png, denoise-epoch-XXXX.png (epochs 1 and 5, or first/last),
                    ood-sigmas.png (one test digit denoised at every sigma)
  pure-noise        pure-noise-epoch-XXXX.png (outputs from pure noise beside the mean train image)
  ddpm / flow       samples-epoch-XXXX.png at each milestone checkpoint (4 x 10; class models: a
                    column per class at the run's guidance), sampling.gif (the final model)
Labelled figures take tiles (B, 1, 28, 28) in [0, 1]; the preview grids (save_grid) take samples
in [-1, 1], as sample_grid returns them; both draw 0 / -1 as the black background. Every draw is
seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from samplers.app.devices import resolve_device
from samplers.app.files import atomic_path
from samplers.app.images import grid, save_gif

from .checkpoints import list_checkpoints
from .config import RunConfig
from .curves import SMOOTHING, smooth
from .data import derive_seed, load_dataset, to_unit
from .runs import load_run_config, read_metrics
from .untrusted import make_folder

SIGMAS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
DENOISER_EPOCHS: tuple[int, ...] = (1, 5)
GIF_MS = {"duration_ms": 60, "hold_ms": 1500}  # sampling.gif: per frame, and the final frame


# ----------------------------------------------------------------------------- drawing helpers
def grid_array(images: Tensor, nrow: int, scale: int = 1) -> np.ndarray:
    """(B, 1, H, W) in [-1, 1] -> (rows, cols) uint8 grid, ``nrow`` tiles a row, grey 2-px gaps
    (samplers.app.images.grid, one channel)."""
    return grid(images, nrow, scale=scale, pad_value=0.0)[..., 0]


def save_grid(images: Tensor, path: Path, nrow: int = 10) -> Path:
    """Write (B, 1, H, W) images in [-1, 1] as one PNG grid (grid_array; black background)."""
    with atomic_path(path) as tmp:  # the dashboard shows it while the run trains
        Image.fromarray(grid_array(images, nrow)).save(tmp, format="PNG")
    return path


def sample_grid(
    lab,
    generator: torch.Generator,
    *,
    per_class: int = 4,
    sampler: str | None = None,
    steps: int | None = None,
    gif_frames: int = 0,
    scale: int = 1,
) -> tuple[Tensor, list[np.ndarray]]:
    """A per_class x K grid of samples at the run's guidance: (K * per_class, 1, 28, 28) in
    [-1, 1], a row per repeat (class models: a column per class). With gif_frames, also about
    that many uint8 grid frames of the chain, ending with the result (for save_gif)."""
    k, frames = lab.config.num_classes, []
    every = max(1, (steps or lab.config.sample_steps) // max(gif_frames, 1))

    def keep(step: dict) -> None:
        if step["i"] % every == 0:
            frames.append(grid_array(step["x"], k, scale))

    x = lab.sample(
        lab.grid_labels(per_class),
        sampler=sampler,
        steps=steps,
        generator=generator,
        callback=keep if gif_frames else None,
    )
    if gif_frames:
        frames.append(grid_array(x, k, scale))
    return x, frames


def _show_grid(
    ax,
    images: Tensor,
    nrow: int,
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    title: str = "",
) -> None:
    """Draw a labelled grid of (B, 1, 28, 28) [0, 1] tiles on a matplotlib axis."""
    ax.imshow(
        grid_array(images * 2 - 1, nrow), cmap="gray", vmin=0, vmax=255, interpolation="nearest"
    )
    step = images.shape[-1] + 2
    ax.set_xticks([2 + step * i + step / 2 - 1 for i in range(len(col_labels))], list(col_labels))
    ax.set_yticks([2 + step * i + step / 2 - 1 for i in range(len(row_labels))], list(row_labels))
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)


def save_figure(fig: Figure, path: Path) -> Path:
    """Write a matplotlib figure as a PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def save_grid_figure(
    path: Path,
    images: Tensor,
    nrow: int,
    *,
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    title: str = "",
) -> Path:
    """One labelled grid as a PNG (tiles (B, 1, 28, 28) in [0, 1])."""
    rows = -(-images.shape[0] // nrow)
    fig = Figure(figsize=(0.45 * nrow + 1.2, 0.45 * rows + 0.8), dpi=120)
    _show_grid(fig.add_subplot(), images, nrow, col_labels, row_labels, title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_loss(run_dir: Path, path: Path, title: str) -> Path | None:
    """Loss against step (log y; raw and smoothed); a second panel of the loss by t bin, if
    logged."""
    rows = [r for r in read_metrics(run_dir) if isinstance(r.get("loss"), (int, float))]
    if not rows:
        return None
    steps = np.array([r["step"] for r in rows], dtype=float)
    loss = np.array([r["loss"] for r in rows], dtype=float)
    tail = [r.get("loss_t_bin") for r in rows[-max(1, len(rows) // 10) :]]
    bins = np.array([[np.nan if v is None else v for v in b] for b in tail if b], dtype=float)
    has_bins = bins.size and np.isfinite(bins).any()
    fig = Figure(figsize=(10 if has_bins else 6, 4), dpi=120)
    ax = fig.add_subplot(1, 2 if has_bins else 1, 1)
    ax.plot(steps, loss, alpha=0.3, lw=0.8, label="logged")
    ax.plot(steps, smooth(loss), lw=1.6, label=f"smoothed ({SMOOTHING:g})")
    ax.set(yscale="log", xlabel="optimizer step", ylabel="training loss (MSE)", title=title)
    ax.legend()
    if has_bins:
        bx = fig.add_subplot(1, 2, 2)
        centers = (np.arange(bins.shape[1]) + 0.5) / bins.shape[1]
        counts = np.isfinite(bins).sum(0)
        means = np.where(counts > 0, np.nansum(bins, 0) / np.maximum(counts, 1), np.nan)
        bx.plot(centers, means, marker="o")
        bx.set(
            yscale="log",
            xlabel="t (0 to 1)",
            ylabel="loss",
            title="loss by t, last 10% of training",
        )
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- per-kind figures
def _pick_checkpoints(run_dir: Path, wanted: Sequence[int]):
    """Checkpoints whose epoch is in ``wanted`` plus the latest; first and last if none match.
    A stopped run's mid-epoch checkpoint is left out unless it is the only one."""
    ckpts = [c for c in list_checkpoints(run_dir) if not c.partial] or list_checkpoints(run_dir)
    chosen = [c for c in ckpts if c.epoch in wanted]
    if not chosen and ckpts:
        chosen = [ckpts[0]]
    if ckpts and ckpts[-1] not in chosen:
        chosen.append(ckpts[-1])
    return chosen


def _noisy(x: Tensor, sigma: float, seed: int) -> Tensor:
    g = torch.Generator(x.device).manual_seed(derive_seed(seed, "figures-noise", sigma))
    return x + sigma * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def _denoiser_figures(run_dir: Path, run: RunConfig, out: Path, device, seed: int) -> list[Path]:
    from .pretrained import load_lab_model

    cfg = run.options
    test = to_unit(load_dataset(run.plan.dataset, cfg.data_root, "test").images[:8]).to(device)
    sig_labels = [f"σ={s:g}" for s in SIGMAS]
    noisy = torch.stack([_noisy(test[:5], s, seed) for s in SIGMAS], 1).flatten(0, 1)
    paths = [
        save_grid_figure(
            out / "noising-sigmas.png",
            noisy,
            len(SIGMAS),
            col_labels=sig_labels,
            title="z = x + σε",
        )
    ]
    lab = None
    for ckpt in _pick_checkpoints(run_dir, DENOISER_EPOCHS):
        lab = load_lab_model(run_dir, ckpt.path, device)
        with torch.no_grad():
            z = _noisy(test, cfg.sigma, seed)
            tiles = torch.cat([test, z, lab.unet(z)])
        paths.append(
            save_grid_figure(
                out / f"denoise-epoch-{ckpt.epoch:04d}.png",
                tiles,
                len(test),
                row_labels=["clean", f"σ={cfg.sigma:g}", "denoised"],
                title=f"test set, epoch {ckpt.epoch}",
            )
        )
    if lab is not None:  # the latest checkpoint: one test digit at every sigma
        with torch.no_grad():
            z = torch.cat([_noisy(test[:1], s, seed) for s in SIGMAS])
            tiles = torch.cat([z, lab.unet(z)])
        paths.append(
            save_grid_figure(
                out / "ood-sigmas.png",
                tiles,
                len(SIGMAS),
                col_labels=sig_labels,
                row_labels=["noisy", "denoised"],
                title=f"trained at σ={cfg.sigma:g}, tested at other σ",
            )
        )
    return paths


def _pure_noise_figures(run_dir: Path, run: RunConfig, out: Path, device, seed: int) -> list[Path]:
    from .pretrained import load_lab_model

    train = load_dataset(run.plan.dataset, run.options.data_root, "train")
    mean = to_unit(train.images).mean(0, keepdim=True)
    paths = []
    for ckpt in _pick_checkpoints(run_dir, DENOISER_EPOCHS):
        lab = load_lab_model(run_dir, ckpt.path, device)
        g = torch.Generator(device).manual_seed(derive_seed(seed, "figures-pure-noise"))
        samples = (lab.sample([-1] * 16, generator=g) + 1) / 2
        fig = Figure(figsize=(7.5, 3.6), dpi=120)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
        _show_grid(left, samples, 4, title=f"outputs from pure noise, epoch {ckpt.epoch}")
        _show_grid(right, mean, 1, title="mean training image")
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"pure-noise-epoch-{ckpt.epoch:04d}.png"))
    return paths


def _sample_figures(
    run_dir: Path,
    run: RunConfig,
    out: Path,
    device,
    seed: int,
    steps: int | None,
    gif_frames: int,
) -> list[Path]:
    from .pretrained import load_lab_model

    cfg = run.options
    classes = (
        load_dataset(run.plan.dataset, cfg.data_root, "test").class_names
        if cfg.class_conditional
        else ()
    )
    paths, ckpts = [], _pick_checkpoints(run_dir, cfg.milestones)
    for i, ckpt in enumerate(ckpts):
        lab = load_lab_model(run_dir, ckpt.path, device)
        final = i == len(ckpts) - 1
        g = torch.Generator(device).manual_seed(derive_seed(seed, "figures-samples"))
        x, frames = sample_grid(lab, g, steps=steps, gif_frames=gif_frames if final else 0, scale=2)
        how = f", guidance {cfg.guidance_scale:g}" if lab.class_conditional else ""
        paths.append(
            save_grid_figure(
                out / f"samples-epoch-{ckpt.epoch:04d}.png",
                (x + 1) / 2,
                10,
                col_labels=classes,
                title=f"{cfg.experiment}, epoch {ckpt.epoch} ({cfg.sampler}, "
                f"{steps or cfg.sample_steps} steps{how})",
            )
        )
        if frames:
            paths.append(save_gif(frames, out / "sampling.gif", **GIF_MS))
    return paths


def make_figures(
    run_dir: str | Path,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    steps: int | None = None,
    gif_frames: int = 60,
) -> list[Path]:
    """Regenerate a run's course deliverables into ``run_dir/figures``; returns the written paths.

    ``steps`` overrides the sampler steps of DDPM/flow grids (default: the run's); the GIF keeps
    about ``gif_frames`` frames. Raises FileNotFoundError for a folder that is not a run.
    """
    run_dir = Path(run_dir)
    run = load_run_config(run_dir)
    cfg = run.options
    device = resolve_device(device)
    out = make_folder(run_dir / "figures")
    loss = plot_loss(run_dir, out / "loss.png", f"{cfg.experiment} ({cfg.name})")
    if cfg.kind == "denoiser":
        paths = _denoiser_figures(run_dir, run, out, device, seed)
    elif cfg.kind == "pure-noise":
        paths = _pure_noise_figures(run_dir, run, out, device, seed)
    else:
        paths = _sample_figures(run_dir, run, out, device, seed, steps, gif_frames)
    return ([loss] if loss else []) + paths
