"""The sampler table: every sampler one pure function with one signature.

    sample_NAME(model, x, schedule, *, generator=None, callback=None, **options) -> x at the end

`model(x, t)` takes the noisy batch x (B, C, H, W) and the time the schedule gives: an int
timestep for the VP samplers (ddpm, ddim), a (B,) float in [0, 1] for the flow samplers (euler,
heun). VP models return noise (B, C, H, W) or noise + variance values (B, 2C, H, W); flow models
return the velocity data - noise. Conditioning and guidance are bound by wrappers (`Guided`,
`illusions.CombinedNoise`, `parameterization.VelocityAsEps`). `schedule` is a `Schedule`; the
sampler walks its consecutive pairs, so a slice (`schedule[i_start:]`) starts part-way.
`callback` gets one dict per model step: i, t, x (at t, before the update), denoised (the
data estimate at that step).

Flow time follows the course: x_t = (1 - t) noise + t data, the model predicts data - noise.
Libraries that flip it (diffusers' FlowMatchEulerDiscreteScheduler: sigma = 1 is noise, velocity
noise - data) map as t = 1 - sigma, v = -v_theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .forward import renoise
from .guidance import check_output, guided_output, split_output
from .parameterization import predict_denoised
from .steps import ddim_step, ddpm_step

Model = Callable[[Tensor, "int | Tensor"], Tensor]
Callback = Callable[[dict], None]


@dataclass(frozen=True, eq=False)
class Schedule:
    """What a sampler walks: `times`, and for VP schedules the `alphas_cumprod` they index.

    VP: int timesteps, descending to 0 or -1 (-1 = clean; a rising pair re-noises, as RePaint
    schedules do), with alphas_cumprod (T,). Flow: floats rising from 0 (noise) to 1 (data),
    alphas_cumprod None. `schedule[a:b]` is the schedule of those entries.
    """

    times: tuple
    alphas_cumprod: Tensor | None = None

    @classmethod
    def vp(cls, alphas_cumprod: Tensor, timesteps: Sequence[int]) -> Schedule:
        return cls(tuple(int(t) for t in timesteps), alphas_cumprod)

    @classmethod
    def flow(cls, num_steps: int) -> Schedule:
        """The course's Euler grid t_k = k / num_steps, k = 0..num_steps."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        return cls(tuple(k / num_steps for k in range(num_steps + 1)))

    @property
    def is_flow(self) -> bool:
        return self.alphas_cumprod is None

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, index: slice) -> Schedule:
        if not isinstance(index, slice):
            raise TypeError(
                "index a Schedule with a slice (schedule[i_start:]); use .times[i] for one entry"
            )
        return replace(self, times=self.times[index])


class Guided:
    """model(x, t, cond) -> the sampler's model(x, t), with classifier-free guidance.

    With `uncond` and guidance_scale != 1, conditional and unconditional run as ONE batched call
    (samplers.guidance.guided_output): noise u + s (c - u), conditional variance kept.
    """

    def __init__(
        self,
        model: Callable,
        cond: Tensor | None = None,
        uncond: Tensor | None = None,
        guidance_scale: float = 1.0,
    ):
        self.model, self.cond, self.uncond, self.guidance_scale = (
            model,
            cond,
            uncond,
            guidance_scale,
        )

    def __call__(self, x: Tensor, t: int | Tensor) -> Tensor:
        return guided_output(self.model, x, t, self.cond, self.uncond, self.guidance_scale)


def _walk_vp(
    model: Model, x: Tensor, schedule: Schedule, step: Callable, generator, callback, project
) -> Tensor:
    """The loop both VP samplers share: step(x, eps, var, t, t_next) for each falling pair."""
    if schedule.is_flow:
        raise ValueError(
            "a VP sampler (ddpm, ddim) needs a VP schedule: Schedule.vp(alphas_cumprod, timesteps)"
        )
    if len(schedule) < 2:
        raise ValueError(
            f"a schedule needs at least 2 timesteps to walk, got {list(schedule.times)}"
        )
    ab, c = schedule.alphas_cumprod, x.shape[1]
    for i, (t, t_next) in enumerate(zip(schedule.times, schedule.times[1:], strict=False)):
        if t_next > t:
            x = renoise(x, t, t_next, ab, generator)
            continue
        out = check_output(model(x, t), x, (c, 2 * c))
        eps, var = split_output(out, c)
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
    generator=None,
    callback=None,
    project: Callable | None = None,
) -> Tensor:
    """Ancestral DDPM (course eq. A.3 and algorithm B.2) along a VP schedule, strided or not.

    Variance: learned range when the model returns 2C channels (IF), else the strided beta.
    project(x, t) -> x, if given, follows every step (inpainting's known-region replacement).
    """
    ab = schedule.alphas_cumprod

    def step(x, eps, var, t, t_next):
        return ddpm_step(x, eps, t, t_next, ab, var, generator)

    return _walk_vp(model, x, schedule, step, generator, callback, project)


@torch.no_grad()
def sample_ddim(
    model: Model,
    x: Tensor,
    schedule: Schedule,
    *,
    generator=None,
    callback=None,
    project: Callable | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021) along a VP schedule: eta=0 deterministic, eta=1 DDPM-like noise."""
    ab = schedule.alphas_cumprod

    def step(x, eps, var, t, t_next):
        return ddim_step(x, eps, t, t_next, ab, eta, generator)

    return _walk_vp(model, x, schedule, step, generator, callback, project)


def _walk_flow(model: Model, x: Tensor, schedule: Schedule, callback, heun: bool) -> Tensor:
    if not schedule.is_flow:
        raise ValueError("a flow sampler (euler, heun) needs a flow schedule: Schedule.flow(steps)")
    if len(schedule) < 2:
        raise ValueError(f"a schedule needs at least 2 times to walk, got {list(schedule.times)}")

    def velocity(x, t):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
        return check_output(model(x, t_batch), x, (x.shape[1],))

    for i, (t, t_next) in enumerate(zip(schedule.times, schedule.times[1:], strict=False)):
        v, dt = velocity(x, t), t_next - t
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": x + (1 - t) * v})
        if heun:
            v = (v + velocity(x + dt * v, t_next)) / 2
        x = x + dt * v
    return x


@torch.no_grad()
def sample_euler(
    model: Model, x: Tensor, schedule: Schedule, *, generator=None, callback=None
) -> Tensor:
    """Forward Euler on dx/dt = v(x, t) from noise (t=0) to data (t=1): course algorithm B.2.

    Deterministic: `generator` is accepted for the table's one signature and draws nothing.
    """
    return _walk_flow(model, x, schedule, callback, heun=False)


@torch.no_grad()
def sample_heun(
    model: Model, x: Tensor, schedule: Schedule, *, generator=None, callback=None
) -> Tensor:
    """Heun's second-order method (two model calls a step) on the flow ODE; deterministic."""
    return _walk_flow(model, x, schedule, callback, heun=True)


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
}
FLOW_SAMPLERS = ("euler", "heun")


def get_sampler(name: str) -> Callable[..., Tensor]:
    """A sampler of the table by name (SAMPLERS)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
