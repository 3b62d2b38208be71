"""A trained lab model ready to sample: `load_lab_model(run_dir)` -> `LabModel`.

Conventions (interfaces.md): DDPM timestep i in 0..T-1 reaches the UNet as (i + 1) / T; flow time
t in [0, 1] follows the course (x_t = (1-t) noise + t data, the UNet predicts data - noise). Class
conditioning is a one-hot (B, 10); label -1 (and the all-zero row) is the null class. Samples are
(B, 1, 28, 28) in [-1, 1] (background -1). All sampling goes through `samplers`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

import samplers

from .checkpoints import Checkpoint, CheckpointError, list_checkpoints, load_weights, verify_checksums
from .config import TrainConfig
from .models import build_model
from .runs import read_config

SAMPLERS_BY_KIND = {"ddpm": ("ddpm", "ddim"), "flow": ("euler", "heun", "ddpm", "ddim"),
                    "denoiser": ("direct",), "pure-noise": ("direct",)}
# 50-step samplers that score as the course's 300-step ones do (`make bench` quality rows: strided
# DDPM 50 = DDPM 300 and Heun 50 = Euler 300 in class accuracy; DDIM 50 loses 2.5 points): the
# dashboard's interactive default and the bench's 50-step rows.
FAST_SAMPLER = {"ddpm": ("ddpm", 50), "flow": ("heun", 50)}


def schedule(cfg: TrainConfig) -> Tensor | None:
    """alphas_cumprod (T,) of a DDPM run; flow runs get the same VP schedule (for VelocityAsEps)."""
    if cfg.kind not in ("ddpm", "flow"):
        return None
    return samplers.linear_alphas_cumprod(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)


def build_unet(cfg: TrainConfig) -> nn.Module:
    return build_model(cfg.arch, hidden=cfg.hidden, conditioning=cfg.conditioning,
                       num_classes=cfg.num_classes)


@dataclass
class LabModel:
    """A lab UNet with its run config; `unet` is used as is (load_lab_model puts it in eval mode)."""

    config: TrainConfig
    unet: nn.Module
    alphas_cumprod: Tensor | None  # (T,) float32 on the model's device (None for denoisers)
    checkpoint: Path | None = None

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def class_conditional(self) -> bool:
        return self.config.class_conditional

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def one_hot(self, labels: Sequence[int] | Tensor) -> Tensor:
        """(B,) ints in [-1, K) -> (B, K) float one-hot; -1 gives the zero row (null class)."""
        labels = torch.as_tensor(labels, device=self.device).long().reshape(-1)
        k = self.config.num_classes
        if labels.numel() and (labels.min() < -1 or labels.max() >= k):
            raise ValueError(f"labels must be in [-1, {k - 1}], got {labels.tolist()}")
        return torch.nn.functional.one_hot(labels.clamp(min=0), k).float() * (labels >= 0)[:, None]

    def eps_model(self, x: Tensor, t: int | Tensor, cond: Tensor | None = None) -> Tensor:
        """DDPM noise prediction; t an int timestep or (B,) ints in 0..T-1 (given as (t+1)/T)."""
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        return self.unet(x, (t.to(x.dtype) + 1) / self.config.num_timesteps, cond)

    def velocity_model(self, x: Tensor, t: float | Tensor, cond: Tensor | None = None) -> Tensor:
        """Flow velocity data - noise at time t (float or (B,) in [0, 1])."""
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype).expand(x.shape[0])
        return self.unet(x, t, cond)

    @torch.no_grad()
    def sample(self, labels: Sequence[int] | Tensor | None = None, *, n: int | None = None,
               guidance_scale: float | None = None, sampler: str | None = None,
               steps: int | None = None, generator: torch.Generator | None = None,
               callback: Callable | None = None) -> Tensor:
        """Generate (B, 1, 28, 28) in [-1, 1]: B = len(labels) (class models; -1 = unconditional)
        or n (time-only and single-step models). CFG (default: the run's scale) runs batched."""
        cfg = self.config
        sampler = sampler or cfg.sampler
        if sampler not in SAMPLERS_BY_KIND[cfg.kind]:
            raise ValueError(f"sampler {sampler!r} does not apply to a {cfg.kind} model; "
                             f"choose from {', '.join(SAMPLERS_BY_KIND[cfg.kind])}")
        cond = uncond = None
        if labels is not None:
            cond = self.one_hot(labels)
            n = cond.shape[0]
        if n is None:
            raise ValueError("pass labels (class-conditional model) or n (number of samples)")
        scale = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        if not self.class_conditional:
            cond, scale = None, 1.0
        elif scale != 1.0:
            uncond = torch.zeros(1, cfg.num_classes, device=self.device)
        x = torch.randn((n, 1, 28, 28), generator=generator, device=self.device)
        if cfg.kind in ("denoiser", "pure-noise"):
            return (2 * self.unet(x) - 1).clamp(-1, 1)
        steps = steps or cfg.sample_steps
        if sampler in ("euler", "heun"):
            out = samplers.flow_sample(self.velocity_model, x, steps, cond=cond, uncond=uncond,
                                       guidance_scale=scale, method=sampler, callback=callback)
        else:
            model = self.eps_model
            if cfg.kind == "flow":
                model = samplers.VelocityAsEps(self.velocity_model, self.alphas_cumprod)
            out = samplers.iterative_denoise(
                model, x, samplers.spaced_timesteps(cfg.num_timesteps, steps),
                self.alphas_cumprod, cond=cond, uncond=uncond, guidance_scale=scale,
                generator=generator, callback=callback, step=sampler)
        return out.clamp(-1, 1)


def find_checkpoint(run_dir: Path, checkpoint: int | str | Path | None) -> Checkpoint:
    """The checkpoint to load: latest (None), a period number, a folder name or a folder path."""
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"{run_dir}: no complete checkpoint under checkpoints/")
    if checkpoint is None:
        return ckpts[-1]
    for c in ckpts:
        if checkpoint in (c.period, c.path.name, str(c.period)) or Path(str(checkpoint)) == c.path:
            return c
    raise CheckpointError(f"{run_dir}: no checkpoint {checkpoint!r}; have "
                          f"{', '.join(c.path.name for c in ckpts)}")


def load_lab_model(run_dir: str | Path, checkpoint: int | str | Path | None = None,
                   device: str | torch.device = "cpu") -> LabModel:
    """Load a run's model (EMA weights when the run kept them) in eval mode on `device`.

    Raises FileNotFoundError for a missing run, CheckpointError for a missing, corrupt or
    mismatched checkpoint (the message names the file).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    cfg = TrainConfig.from_dict(read_config(run_dir))
    ckpt = find_checkpoint(run_dir, checkpoint)
    if ckpt.meta.get("experiment", cfg.experiment) != cfg.experiment:
        raise CheckpointError(f"{ckpt.path / 'meta.json'}: a checkpoint of {ckpt.meta['experiment']!r}, "
                              f"but the run is {cfg.experiment!r}")
    unet = build_unet(cfg).to(device)
    try:
        weights = load_weights(ckpt.weights_file, device, experiment=cfg.experiment,
                               expected=unet.state_dict())
    except CheckpointError as e:
        if "does not fit" not in str(e):
            raise
        raise CheckpointError(f"{e} (run: arch={cfg.arch}, hidden={cfg.hidden}, "
                              f"conditioning={cfg.conditioning})") from e
    verify_checksums(ckpt, (ckpt.weights_file.name,))
    unet.load_state_dict(weights, strict=True)
    unet = unet.to(memory_format=torch.channels_last)  # faster convolutions when sampling (make bench)
    ab = schedule(cfg)
    return LabModel(cfg, unet.eval(), None if ab is None else ab.to(device), ckpt.path)
