"""A distilled student's inputs and outputs, in flow coordinates for flow and DDPM teachers alike.

A student (training.distill) predicts u(x_t, t, s, c, w), the average guided velocity from flow
time t to s (x_s = x_t + (s - t) u; s = t: the ordinary guided velocity), with the course's
x_t = (1 - t) noise + t data. It is its teacher's UNet with more conditioning inputs: the time
FCBlocks take [t', s - t, (w - 1) / 6] and the class FCBlocks [c, c (w - 1) / 6] (c one-hot, the
zero row the null class), where t' is the teacher's own time input. A student of a DDPM keeps
the DDPM's parameterisation: a VP state at alpha-bar ab is the flow state x scaled by
sqrt(ab) + sqrt(1 - ab) at tau = sqrt(ab) / (sqrt(ab) + sqrt(1 - ab)) (as
samplers.VelocityAsEps maps them), its time input is (i + 1) / T at the fractional timestep i
whose ab is the state's, and its noise output eps gives u = (x - eps) / t.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# network(x, time, c, extra_t, extra_c) -> the UNet's output (B, 1, H, W)
Network = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
GUIDANCE_SPAN = 6.0  # w enters as (w - 1) / GUIDANCE_SPAN: 0 at w = 1, 1 at w = 7


def alpha_bar_of_flow_time(tau: Tensor) -> Tensor:
    """The VP alpha-bar whose state is the flow state at tau in [0, 1]: tau^2 / (tau^2 +
    (1 - tau)^2)."""
    return tau**2 / (tau**2 + (1 - tau) ** 2)


def flow_time_of_alpha_bar(ab: Tensor) -> Tensor:
    """The flow time of a VP state at alpha-bar ab: sqrt(ab) / (sqrt(ab) + sqrt(1 - ab))."""
    return ab.sqrt() / (ab.sqrt() + (1 - ab).sqrt())


def vp_scale(tau: Tensor) -> Tensor:
    """x_vp / x_flow at flow time tau: sqrt(ab) + sqrt(1 - ab) (1 at tau = 0 and tau = 1)."""
    ab = alpha_bar_of_flow_time(tau)
    return ab.sqrt() + (1 - ab).sqrt()


def ddpm_unet_time(tau: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """A DDPM UNet's time input (i + 1) / T at flow time tau (B,): i interpolated linearly in
    log alpha-bar between the schedule's steps (exact at them; i = -1 at ab = 1)."""
    ac = alphas_cumprod.to(tau.device, torch.float64)
    T = ac.shape[0]
    log_ab = alpha_bar_of_flow_time(tau.double()).clamp(float(ac[-1]), 1.0).log()
    table = torch.cat([ac.new_zeros(1), ac.log()])  # falling; entry k is step k - 1
    idx = torch.searchsorted(-table, -log_ab).clamp(1, T)
    lo, hi = table[idx - 1], table[idx]
    frac = ((lo - log_ab) / (lo - hi)).clamp(0, 1)
    return ((idx - 1 + frac) / T).to(tau.dtype)


def average_velocity(
    network: Network,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    c: Tensor,
    w: Tensor,
    alphas_cumprod: Tensor | None = None,
) -> Tensor:
    """u(x, t, s, c, w) (B, 1, H, W) of a student whose UNet is `network`: x (B, 1, H, W) the
    flow state at t, t and s (B,) flow times, c (B, K) one-hot (a zero row: null class), w (B,)
    guidance scales; `alphas_cumprod` (T,) for a student of a DDPM (None: of a flow model)."""
    w = w.to(x.dtype)
    extra_t = torch.stack([s - t, (w - 1) / GUIDANCE_SPAN], 1).to(x.dtype)
    extra_c = c * ((w - 1) / GUIDANCE_SPAN)[:, None]
    if alphas_cumprod is None:
        return network(x, t, c, extra_t, extra_c)
    scale = vp_scale(t.double()).to(x.dtype).view(-1, 1, 1, 1)
    eps = network(x * scale, ddpm_unet_time(t, alphas_cumprod), c, extra_t, extra_c)
    return (x - eps) / t.view(-1, 1, 1, 1)


def student_times(times: Sequence[float], steps: int) -> list[float]:
    """The steps + 1 times of an N-step walk over a student's grid `times` (K + 1 flow times):
    entries round(j K / N), so the uniform N-step subgrid when N divides K."""
    k = len(times) - 1
    if not 1 <= steps <= k:
        raise ValueError(f"a student on a grid of {k} intervals takes 1 to {k} steps, got {steps}")
    return [float(times[round(j * k / steps)]) for j in range(steps + 1)]
