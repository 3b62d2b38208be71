"""Diffusion Lab samplers: every Part A algorithm once, over any noise- or velocity-predicting
model.

Images are (B, C, H, W) in [-1, 1]; VP timesteps are 0-indexed ints with -1 meaning "clean";
flow times are floats in [0, 1], x_t = (1 - t) noise + t data.

The sampler table (samplers.table; the functions in samplers.sampling), one signature for all:

    sample_NAME(model, x, schedule, *, generator=None, callback=None, **options) -> final x

    | sampler         | schedules | model(x, t) returns                | calls/step | options      |
    |-----------------|-----------|------------------------------------|------------|--------------|
    | sample_ddpm     | vp        | noise (or noise + variance)        | 1          | project      |
    | sample_ddim     | vp        | noise (variance ignored)           | 1          | project, eta |
    | sample_euler    | flow      | velocity data - noise              | 1          |              |
    | sample_heun     | flow      | velocity data - noise              | 2          |              |
    | sample_dpmpp_2m | vp, flow  | as the schedule's kind (vp: noise) | 1          |              |
    | sample_flowmap  | flowmap   | model(x, t, s): average velocity   | 1 (no CFG) |              |

Schedules: `Schedule.vp(alphas_cumprod, timesteps)` (int t, model predicts noise) and
`Schedule.flow(steps, shift=1.0)` ((B,) float t, model predicts velocity); a distilled student
walks `Schedule.flowmap(times)` with model(x, t, s) -> its average velocity from t to s, the
guidance scale an input bound by `GuidedStudent` (one call a step: no CFG pair).
`samplers_for(kind)` names the samplers of a kind, `sampler_spec(name, kind)` checks one,
`nfe(name, steps, guided)` counts model evaluations per image (`guided=True`: a CFG pair counts
2, a student's one call 1).

Model wrappers bind what the table does not carry: `Guided(model, cond, uncond, scale)` (CFG in
one batched call), `anagram_noise` / `hybrid_noise` / `three_band_noise` (illusions.CombinedNoise)
and `VelocityAsEps` (a flow model on the VP samplers). Tasks built on the table: `sdedit`
(`schedule[i_start:]`) and `inpaint`; beside it, the course's two denoisers that are not samplers,
`one_step_denoise` and `blur_denoise`.

This package is the sampler core: its modules import torch and the standard library only. Its
names load on first use, so `import samplers` alone (and `python -m samplers --help`) imports no
torch. The Part A application (the course's tasks, images, backends, the CLI `python -m samplers`)
is the subpackage `samplers.app`, on top of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ loads, for type checkers and editors
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
        GuidedStudent,
        sample_ddim,
        sample_ddpm,
        sample_dpmpp_2m,
        sample_euler,
        sample_flowmap,
        sample_heun,
    )
    from .schedules import (
        Schedule,
        linear_alphas_cumprod,
        repaint_timesteps,
        spaced_timesteps,
        strided_timesteps,
    )
    from .steps import ddim_step, ddpm_step
    from .table import (
        SAMPLER_TABLE,
        SamplerSpec,
        ScheduleKind,
        get_sampler,
        nfe,
        sampler_spec,
        samplers_for,
    )
    from .views import VIEW_NAMES, View, get_view

__all__ = [
    "FLOW_SAMPLERS",
    "SAMPLERS",
    "SAMPLER_TABLE",
    "VIEW_NAMES",
    "CombinedNoise",
    "Guided",
    "GuidedStudent",
    "SamplerSpec",
    "Schedule",
    "ScheduleKind",
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
    "nfe",
    "one_step_denoise",
    "predict_denoised",
    "renoise",
    "repaint_timesteps",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_flowmap",
    "sample_heun",
    "sampler_spec",
    "samplers_for",
    "sdedit",
    "spaced_timesteps",
    "strided_timesteps",
    "three_band_noise",
]
_MODULES = (
    "denoise",
    "editing",
    "forward",
    "guidance",
    "illusions",
    "parameterization",
    "sampling",
    "schedules",
    "steps",
    "table",
    "views",
)


def __getattr__(name: str) -> Any:
    """An exported name, loaded with its module (and torch) on first use (PEP 562)."""
    if name in __all__:
        for module in _MODULES:
            found = vars(importlib.import_module(f".{module}", __name__))
            if name in found:
                globals()[name] = found[name]
                return found[name]
    raise AttributeError(f"module 'samplers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
