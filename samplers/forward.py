"""The forward (noising) process of a VP diffusion: q(x_t | x0) and q(x_t | x_s)."""

from __future__ import annotations

import torch
from torch import Tensor

from .schedules import alpha_bar


def randn_like_gen(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like x: torch.randn(x.shape, generator, dtype, device=x.device).

    A CPU generator with an accelerator tensor draws on the CPU and moves (as diffusers does).
    """
    device = x.device
    if generator is not None and generator.device.type != device.type:
        device = generator.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


@torch.no_grad()
def add_noise(
    x0: Tensor,
    t: int | Tensor,
    alphas_cumprod: Tensor,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """sqrt(ab[t]) x0 + sqrt(1 - ab[t]) noise. x0 (B, C, H, W); t an int or (B,) tensor; t=-1:
    x0."""
    noise = randn_like_gen(x0, generator) if noise is None else noise
    ab = alpha_bar(alphas_cumprod, t, x0)
    return ab.sqrt().to(x0.dtype) * x0 + (1 - ab).sqrt().to(x0.dtype) * noise


@torch.no_grad()
def renoise(
    x_s: Tensor, s: int, t: int, alphas_cumprod: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Forward transition q(x_t | x_s) for s < t (s=-1: clean): sqrt(ab_t/ab_s) x_s + sqrt(1 -
    ab_t/ab_s) eps."""
    if not s < t:
        raise ValueError(f"renoise goes up in noise: need s < t, got s={s}, t={t}")
    a = alpha_bar(alphas_cumprod, t, x_s) / alpha_bar(alphas_cumprod, s, x_s)
    eps = randn_like_gen(x_s, generator)
    return a.sqrt().to(x_s.dtype) * x_s + (1 - a).sqrt().to(x_s.dtype) * eps
