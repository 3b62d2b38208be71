"""Denoisers of course Part A that are not samplers: classical blur and the one-step estimate."""

import torch

from .filters import gaussian_blur
from .parameterization import predict_denoised


@torch.no_grad()
def blur_denoise(x, kernel_size=5, sigma=2.0):
    """Classical denoising (course 1.2): Gaussian blur of x (B, C, H, W)."""
    return gaussian_blur(x, kernel_size, sigma)


@torch.no_grad()
def one_step_denoise(model, x_t, t, alphas_cumprod):
    """Clean estimate x0_hat from one noise prediction model(x_t, t) at the int timestep t
    (course 1.3); variance channels of a 2C-channel output are ignored."""
    eps = model(x_t, t)[:, : x_t.shape[1]]
    return predict_denoised(x_t, eps, t, alphas_cumprod)
