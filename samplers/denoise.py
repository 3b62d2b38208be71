"""Denoisers of course Part A that are not samplers: classical blur and the one-step estimate."""

from __future__ import annotations

import torch
from torch import Tensor

from .filters import gaussian_blur
from .parameterization import predict_denoised
from .sampling import Model


@torch.no_grad()
def blur_denoise(x: Tensor, kernel_size: int = 5, sigma: float = 2.0) -> Tensor:
    """Classical denoising (course 1.2): Gaussian blur of x (B, C, H, W)."""
    return gaussian_blur(x, kernel_size, sigma)


@torch.no_grad()
def one_step_denoise(model: Model, x_t: Tensor, t: int, alphas_cumprod: Tensor) -> Tensor:
    """Clean estimate x0_hat from one noise prediction model(x_t, t) at the int timestep t
    (course 1.3); variance channels of a 2C-channel output are ignored."""
    eps = model(x_t, t)[:, : x_t.shape[1]]
    return predict_denoised(x_t, eps, t, alphas_cumprod)
