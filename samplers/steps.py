"""Single reverse steps x_t -> x_t_prev over any pair of timesteps t > t_prev (t_prev = -1:
clean)."""

from __future__ import annotations

import torch
from torch import Tensor

from .forward import randn_like_gen
from .parameterization import predict_denoised
from .schedules import alpha_bar


@torch.no_grad()
def ddpm_step(
    x_t: Tensor,
    eps: Tensor,
    t: int,
    t_prev: int,
    alphas_cumprod: Tensor,
    predicted_variance: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One (strided) DDPM step, course eq. A.3, plus noise; equals diffusers' DDPMScheduler.step.

    mean = sqrt(ab')(1 - a)/(1 - ab) x0_hat + sqrt(a)(1 - ab')/(1 - ab) x_t with a = ab/ab'.
    Variance: strided beta 1 - a ("fixed_large"), or with predicted_variance v (the second half of
    a 6-channel IF output, in [-1, 1]) the learned range exp(f log beta + (1 - f) log beta_tilde),
    f = (v + 1)/2. Noise is drawn once, only when t > 0.
    """
    t, t_prev, dt = int(t), int(t_prev), x_t.dtype
    ab, ab_prev = alpha_bar(alphas_cumprod, t, x_t), alpha_bar(alphas_cumprod, t_prev, x_t)
    alpha = ab / ab_prev
    beta = 1 - alpha
    denoised = predict_denoised(x_t, eps, t, alphas_cumprod)
    x = (ab_prev.sqrt() * beta / (1 - ab)).to(dt) * denoised + (
        alpha.sqrt() * (1 - ab_prev) / (1 - ab)
    ).to(dt) * x_t
    if t > 0:
        noise = randn_like_gen(x_t, generator)
        if predicted_variance is None:
            std = beta.sqrt().to(dt)
        else:
            min_log = torch.clamp((1 - ab_prev) / (1 - ab) * beta, min=1e-20).log().to(dt)
            frac = (predicted_variance + 1) / 2
            std = torch.exp(0.5 * (frac * beta.log().to(dt) + (1 - frac) * min_log))
        x = x + std * noise
    return x


@torch.no_grad()
def ddim_step(
    x_t: Tensor,
    eps: Tensor,
    t: int,
    t_prev: int,
    alphas_cumprod: Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One DDIM step (Song et al. 2021, eq. 12); eta=0 is deterministic, eta=1 is DDPM-like.

    x' = sqrt(ab') x0_hat + sqrt(1 - ab' - s^2) eps + s z, s = eta sqrt((1-ab')/(1-ab)(1 - ab/ab')).
    Noise is drawn once when eta > 0 (as diffusers' DDIMScheduler does).
    """
    dt = x_t.dtype
    ab, ab_prev = alpha_bar(alphas_cumprod, t, x_t), alpha_bar(alphas_cumprod, t_prev, x_t)
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
    denoised = predict_denoised(x_t, eps, t, alphas_cumprod)
    x = ab_prev.sqrt().to(dt) * denoised + (1 - ab_prev - sigma**2).clamp(min=0).sqrt().to(dt) * eps
    if eta > 0:
        x = x + sigma.to(dt) * randn_like_gen(x_t, generator)
    return x
