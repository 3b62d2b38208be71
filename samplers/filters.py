"""Gaussian blur on (B, C, H, W) tensors, as torchvision's `gaussian_blur` computes it."""

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel(kernel_size: int, sigma: float, like: Tensor) -> Tensor:
    """(kernel_size,) weights exp(-k^2 / 2 sigma^2) for k = -(n-1)/2 .. (n-1)/2, summing to 1."""
    half = (kernel_size - 1) / 2
    k = torch.linspace(-half, half, kernel_size, device=like.device, dtype=like.dtype)
    w = torch.exp(-0.5 * (k / sigma) ** 2)
    return w / w.sum()


def gaussian_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """x (B, C, H, W) blurred by a separable Gaussian of odd `kernel_size` (< 2 min(H, W)) and
    `sigma` > 0, each channel alone, reflect-padded at the borders."""
    if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
        raise ValueError(f"need an odd kernel_size >= 1 and sigma > 0, got {kernel_size}, {sigma}")
    if kernel_size >= 2 * min(x.shape[-2:]):
        raise ValueError(
            f"kernel_size must be below {2 * min(x.shape[-2:])} (twice the image's shorter side) "
            f"for {x.shape[-2]}x{x.shape[-1]} images, got {kernel_size}"
        )
    c, pad = x.shape[1], kernel_size // 2
    w = gaussian_kernel(kernel_size, sigma, x)
    y = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, w.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), groups=c)
    return F.conv2d(y, w.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), groups=c)
