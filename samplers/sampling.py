"""The samplers of the table (samplers.table): every sampler one pure function, one signature.

    sample_NAME(model, x, schedule, *, generator=None, callback=None, **options) -> x at the end

`model(x, t)` takes the noisy batch x (B, C, H, W) and the time the schedule gives: an int
timestep on a VP schedule, a (B,) float in [0, 1] on a flow schedule. VP models return noise
(B, C, H, W) or noise + variance values (B, 2C, H, W); flow models return the velocity
data - noise. Conditioning and guidance are bound by wrappers (`Guided`,
`illusions.CombinedNoise`, `parameterization.VelocityAsEps`). `schedule` is a `Schedule`; the
sampler walks its consecutive pairs, so a slice (`schedule[i_start:]`) starts part-way.
A distilled student walks a "flowmap" schedule with `sample_flowmap`, model(x, t, s) -> the
average velocity from t to s. `callback` gets one `Step` dict per model step: i, t, x (at t,
before the update), denoised (the data estimate at that step).

Flow time follows the course: x_t = (1 - t) noise + t data, the model predicts data - noise.
Libraries that flip it (diffusers' FlowMatchEulerDiscreteScheduler: sigma = 1 is noise, velocity
noise - data) map as t = 1 - sigma, v = -v_theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, TypedDict

import torch
from torch import Tensor

from .forward import renoise
from .guidance import (
    ConditionalModel,
    check_output,
    expand_batch,
    guided_output,
    split_output,
)
from .parameterization import flow_denoised, predict_denoised
from .schedules import Schedule
from .steps import ddim_step, ddpm_step
from .table import SAMPLER_TABLE, sampler_spec

Model = Callable[[Tensor, "int | Tensor"], Tensor]  # model(x, t) -> noise or velocity
FlowMapModel = Callable[[Tensor, Tensor, Tensor], Tensor]  # model(x, t, s) -> average velocity
# a student: student(x, t, s, cond, guidance_scale (B,)) -> the average guided velocity
StudentModel = Callable[[Tensor, Tensor, Tensor, "Tensor | None", Tensor], Tensor]


class Step(TypedDict):
    """What a callback gets at each model step."""

    i: int  # index of the step's first time in the schedule
    t: float  # that time (an int timestep on VP schedules)
    x: Tensor  # the batch at t, (B, C, H, W)
    denoised: Tensor  # the data estimate at t, (B, C, H, W)


Callback = Callable[[Step], None]
Project = Callable[[Tensor, int], Tensor]  # project(x, t) -> x, after each VP step


class Sampler(Protocol):
    """The table's one signature; samplers may take more keyword options."""

    def __call__(
        self,
        model: Model,
        x: Tensor,
        schedule: Schedule,
        *,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
    ) -> Tensor: ...


class ProjectingSampler(Protocol):
    """A VP sampler that takes project(x, t_next) -> x after each step (ddpm, ddim)."""

    def __call__(
        self,
        model: Model,
        x: Tensor,
        schedule: Schedule,
        *,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        project: Project | None = None,
    ) -> Tensor: ...


class Guided:
    """model(x, t, cond) -> the sampler's model(x, t), with classifier-free guidance.

    With `uncond` and guidance_scale != 1, conditional and unconditional run as ONE batched call
    (samplers.guidance.guided_output): noise u + s (c - u), conditional variance kept.
    """

    def __init__(
        self,
        model: ConditionalModel,
        cond: Tensor | None = None,
        uncond: Tensor | None = None,
        guidance_scale: float = 1.0,
    ) -> None:
        self.model, self.cond, self.uncond = model, cond, uncond
        self.guidance_scale = guidance_scale

    def __call__(self, x: Tensor, t: int | Tensor) -> Tensor:
        return guided_output(self.model, x, t, self.cond, self.uncond, self.guidance_scale)


class GuidedStudent:
    """student(x, t, s, cond, w) -> the flowmap sampler's model(x, t, s), at guidance scale w.

    A distilled student takes the guidance scale as an input (Meng et al. 2023): one call a step
    at any scale, no conditional + unconditional pair as `Guided` makes.
    """

    def __init__(
        self, student: StudentModel, cond: Tensor | None = None, guidance_scale: float = 1.0
    ) -> None:
        self.student, self.cond, self.guidance_scale = student, cond, guidance_scale

    def __call__(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        w = torch.full((x.shape[0],), self.guidance_scale, device=x.device, dtype=x.dtype)
        return self.student(x, t, s, expand_batch(self.cond, x.shape[0]), w)


def _check_walkable(schedule: Schedule, sampler: str) -> None:
    """ValueError unless `schedule` has a kind `sampler` walks and a step to take."""
    kinds = sampler_spec(sampler).kinds
    if schedule.kind not in kinds:
        want = "a VP schedule: Schedule.vp(alphas_cumprod, timesteps)"
        if "flow" in kinds:
            want = "a flow schedule: Schedule.flow(steps, shift)"
        if "flowmap" in kinds:
            want = "a flow-map schedule: Schedule.flowmap(times)"
        raise ValueError(f"the {sampler} sampler needs {want}")
    if len(schedule) < 2:
        what = "timesteps" if schedule.kind == "vp" else "times"
        raise ValueError(f"a schedule needs at least 2 {what} to walk, got {list(schedule.times)}")


def _noise(model: Model, x: Tensor, t: int) -> tuple[Tensor, Tensor | None]:
    """(noise, variance values or None) of a VP model at int timestep t."""
    return split_output(check_output(model(x, t), x, (x.shape[1], 2 * x.shape[1])), x.shape[1])


def _velocity(model: Model, x: Tensor, t: float) -> Tensor:
    """A flow model's velocity at time t, given as a (B,) tensor in x's dtype."""
    t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
    return check_output(model(x, t_batch), x, (x.shape[1],))


def _walk_vp(
    model: Model,
    x: Tensor,
    schedule: Schedule,
    step: Callable[[Tensor, Tensor, Tensor | None, int, int], Tensor],
    callback: Callback | None,
    project: Project | None,
    generator: torch.Generator | None,
    sampler: str,
) -> Tensor:
    """The loop of ddpm and ddim: step(x, eps, var, t, t_next) for each falling pair; a rising
    pair re-noises with q(x_t_next | x_t)."""
    _check_walkable(schedule, sampler)
    ab = schedule.alphas_cumprod
    assert ab is not None
    times = [int(t) for t in schedule.times]
    for i, (t, t_next) in enumerate(zip(times, times[1:], strict=False)):
        if t_next > t:
            x = renoise(x, t, t_next, ab, generator)
            continue
        eps, var = _noise(model, x, t)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": predict_denoised(x, eps, t, ab)})
        x = step(x, eps, var, t, t_next)
        if project is not None:
            x = project(x, t_next)
    return x


@torch.no_grad()
def sample_ddpm(
    model: Model,
    x: Tensor,
    schedule: Schedule,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    project: Project | None = None,
) -> Tensor:
    """Ancestral DDPM (course eq. A.3 and algorithm B.2) along a VP schedule, strided or not.

    Variance: learned range when the model returns 2C channels (IF), else the strided beta.
    project(x, t) -> x, if given, follows every step (inpainting's known-region replacement).
    """
    ab = schedule.alphas_cumprod

    def step(x: Tensor, eps: Tensor, var: Tensor | None, t: int, t_next: int) -> Tensor:
        assert ab is not None
        return ddpm_step(x, eps, t, t_next, ab, var, generator)

    return _walk_vp(model, x, schedule, step, callback, project, generator, "ddpm")


@torch.no_grad()
def sample_ddim(
    model: Model,
    x: Tensor,
    schedule: Schedule,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    project: Project | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021) along a VP schedule: eta=0 deterministic, eta=1 DDPM-like noise;
    the variance values of a 2C-channel output are ignored."""
    ab = schedule.alphas_cumprod

    def step(x: Tensor, eps: Tensor, var: Tensor | None, t: int, t_next: int) -> Tensor:
        assert ab is not None
        return ddim_step(x, eps, t, t_next, ab, eta, generator)

    return _walk_vp(model, x, schedule, step, callback, project, generator, "ddim")


def _walk_flow(
    model: Model, x: Tensor, schedule: Schedule, callback: Callback | None, sampler: str
) -> Tensor:
    """Euler (sampler "euler") or Heun ("heun") along the flow grid."""
    _check_walkable(schedule, sampler)
    times = schedule.times
    for i, (t, t_next) in enumerate(zip(times, times[1:], strict=False)):
        v, dt = _velocity(model, x, t), t_next - t
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": flow_denoised(x, v, t)})
        if sampler == "heun":
            v = (v + _velocity(model, x + dt * v, t_next)) / 2
        x = x + dt * v
    return x


@torch.no_grad()
def sample_euler(
    model: Model,
    x: Tensor,
    schedule: Schedule,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Forward Euler on dx/dt = v(x, t) from noise (t=0) to data (t=1): course algorithm B.2.

    Deterministic: `generator` is accepted for the table's one signature and draws nothing.
    """
    return _walk_flow(model, x, schedule, callback, "euler")


@torch.no_grad()
def sample_heun(
    model: Model,
    x: Tensor,
    schedule: Schedule,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Heun's second-order method (two model calls a step) on the flow ODE; deterministic."""
    return _walk_flow(model, x, schedule, callback, "heun")


def _alphas_sigmas(schedule: Schedule) -> list[tuple[float, float]]:
    """(alpha_t, sigma_t) at each time, x_t = alpha_t data + sigma_t noise, in float64:
    VP sqrt(ab[t]), sqrt(1 - ab[t]) (clean t = -1: 1, 0); flow t, 1 - t."""
    if schedule.alphas_cumprod is None:
        return [(t, 1 - t) for t in schedule.times]
    ab = schedule.alphas_cumprod.detach().cpu().double().tolist()
    return [
        (1.0, 0.0) if t < 0 else (ab[t] ** 0.5, (1 - ab[t]) ** 0.5)
        for t in map(int, schedule.times)
    ]


def _log_snr(alpha: float, sigma: float) -> float:
    """lambda = log(alpha / sigma): -inf at pure noise, +inf at clean data."""
    if alpha == 0:
        return -math.inf
    return math.inf if sigma == 0 else math.log(alpha / sigma)


@torch.no_grad()
def sample_dpmpp_2m(
    model: Model,
    x: Tensor,
    schedule: Schedule,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): the multistep second-order solver of the
    diffusion ODE in the data prediction; one model call a step, deterministic.

    VP schedule (times falling to 0 or -1): model(x, t) returns noise, its variance half (if
    2C channels) ignored; flow schedule (times rising from 0 to 1): model(x, t) returns the
    velocity. With x_t = alpha_t data + sigma_t noise (VP sqrt(ab), sqrt(1 - ab); flow t, 1 - t),
    lambda = log(alpha / sigma) and D the data estimate, a step s -> t of h = lambda_t - lambda_s:

        x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) D',
        D' = (1 + 1/2r) D_s - (1/2r) D_prev,  r = h_prev / h.

    D' = D_s (first order) where r is undefined or 0: at the first step, after a step from pure
    noise (flow's t = 0, lambda = -inf), and into clean data (sigma_t = 0, lambda = +inf).
    """
    _check_walkable(schedule, "dpmpp_2m")
    times = schedule.times
    step_sign = -1 if schedule.kind == "vp" else 1
    if any((b - a) * step_sign <= 0 for a, b in zip(times, times[1:], strict=False)):
        toward = "fall" if step_sign < 0 else "rise"
        raise ValueError(f"dpmpp_2m needs times that {toward} toward data, got {list(times)}")
    ab = schedule.alphas_cumprod

    def denoise(x: Tensor, t: float) -> Tensor:
        if ab is None:
            return flow_denoised(x, _velocity(model, x, t), t)
        return predict_denoised(x, _noise(model, x, int(t))[0], int(t), ab)

    coefs = _alphas_sigmas(schedule)
    lambdas = [_log_snr(alpha, sigma) for alpha, sigma in coefs]
    previous: tuple[Tensor, float] | None = None  # (D_prev, h_prev)
    for i, t in enumerate(times[:-1]):
        denoised = denoise(x, t)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": denoised})
        (_, sigma), (alpha_next, sigma_next) = coefs[i], coefs[i + 1]
        h = lambdas[i + 1] - lambdas[i]
        d = denoised
        if previous is not None and math.isfinite(h) and math.isfinite(previous[1]):
            r = previous[1] / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous[0]
        x = (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * d
        previous = denoised, h
    return x


@torch.no_grad()
def sample_flowmap(
    model: FlowMapModel,
    x: Tensor,
    schedule: Schedule,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """A flow-map student's jumps x_s = x_t + (s - t) u(x_t, t, s), one call a step, over the
    consecutive pairs of a flow-map schedule (Schedule.flowmap); deterministic. `model(x, t, s)`
    takes (B,) times in x's dtype; bind conditioning and the guidance scale with `GuidedStudent`.
    The callback's `denoised` is the step's own jump to s = 1 extrapolated, x + (1 - t) u: no
    extra call."""
    _check_walkable(schedule, "flowmap")
    times = schedule.times
    for i, (t, s) in enumerate(zip(times, times[1:], strict=False)):
        tb, sb = (torch.full((x.shape[0],), v, device=x.device, dtype=x.dtype) for v in (t, s))
        u = check_output(model(x, tb, sb), x, (x.shape[1],))
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": flow_denoised(x, u, t)})
        x = x + (s - t) * u
    return x


# The table's functions by name, and the flow-only ones: the older view of the table that
# training uses (samplers.table's sampler_spec / samplers_for / nfe replace both).
SAMPLERS: dict[str, Sampler] = {spec.name: spec.function for spec in SAMPLER_TABLE}
FLOW_SAMPLERS: tuple[str, ...] = tuple(s.name for s in SAMPLER_TABLE if s.kinds == ("flow",))

__all__ = [
    "FLOW_SAMPLERS",
    "SAMPLERS",
    "Callback",
    "FlowMapModel",
    "Guided",
    "GuidedStudent",
    "Model",
    "Project",
    "ProjectingSampler",
    "Sampler",
    "Schedule",
    "Step",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_flowmap",
    "sample_heun",
]
