"""Diffusion Lab samplers: every Part A algorithm once, over any noise- or velocity-predicting
model.

Images are (B, C, H, W) in [-1, 1]; VP timesteps are 0-indexed ints with -1 meaning "clean".

The sampler table (samplers.sampling), one signature for all:

    sample_NAME(model, x, schedule, *, generator=None, callback=None, **options) -> final x

    | sampler      | model(x, t) returns         | schedule                        | options      |
    |--------------|-----------------------------|---------------------------------|--------------|
    | sample_ddpm  | noise (or noise + variance) | Schedule.vp(alphas_cumprod, ts) | project      |
    | sample_ddim  | noise                       | Schedule.vp(alphas_cumprod, ts) | project, eta |
    | sample_euler | velocity data - noise       | Schedule.flow(steps)            |              |
    | sample_heun  | velocity data - noise       | Schedule.flow(steps)            |              |

Model wrappers bind what the table does not carry: `Guided(model, cond, uncond, scale)` (CFG in
one batched call), `anagram_noise` / `hybrid_noise` / `three_band_noise` (illusions.CombinedNoise)
and `VelocityAsEps` (a flow model on the VP samplers). Tasks built on the table: `sdedit`
(`schedule[i_start:]`) and `inpaint`; beside it, the course's two denoisers that are not samplers,
`one_step_denoise` and `blur_denoise`.

This package is the sampler core: its modules import torch and the standard library only. The
Part A application (the course's tasks, images, backends, the CLI `python -m samplers`) is the
subpackage `samplers.app`, on top of it.
"""

from .denoise import blur_denoise, one_step_denoise
from .editing import inpaint, sdedit
from .forward import add_noise, renoise
from .guidance import guided_output
from .illusions import CombinedNoise, anagram_noise, hybrid_noise, three_band_noise
from .parameterization import VelocityAsEps, predict_denoised
from .sampling import (
    FLOW_SAMPLERS,
    SAMPLERS,
    Guided,
    Schedule,
    get_sampler,
    sample_ddim,
    sample_ddpm,
    sample_euler,
    sample_heun,
)
from .schedules import linear_alphas_cumprod, repaint_timesteps, spaced_timesteps, strided_timesteps
from .steps import ddim_step, ddpm_step
from .views import VIEW_NAMES, View, get_view

__all__ = [
    "FLOW_SAMPLERS",
    "SAMPLERS",
    "CombinedNoise",
    "Guided",
    "Schedule",
    "VIEW_NAMES",
    "VelocityAsEps",
    "View",
    "add_noise",
    "anagram_noise",
    "blur_denoise",
    "ddim_step",
    "ddpm_step",
    "get_sampler",
    "get_view",
    "guided_output",
    "hybrid_noise",
    "inpaint",
    "linear_alphas_cumprod",
    "one_step_denoise",
    "predict_denoised",
    "renoise",
    "repaint_timesteps",
    "sample_ddim",
    "sample_ddpm",
    "sample_euler",
    "sample_heun",
    "sdedit",
    "spaced_timesteps",
    "strided_timesteps",
    "three_band_noise",
]
