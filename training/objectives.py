"""Training objectives of Part B (docs/course.md 3.5-3.7).

Each returns per-sample losses (B,) and the time t (B,) in [0, 1] it drew (None for single-step
denoisers), so the trainer can average the loss and bin it by t. Every draw goes through the
`generator` passed in; `noise`/`t` may be given to make a loss deterministic (tests).
  x: (B, 1, 28, 28): [0, 1] for the denoisers, [-1, 1] for DDPM and flow.
  c: (B, K) one-hot labels or None (time-only models).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from samplers import add_noise

from .config import TrainConfig
from .pretrained import unet_time

Objective = Callable[..., tuple[Tensor, Tensor | None]]


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def drop_classes(c: Tensor, p_uncond: float, generator: torch.Generator) -> Tensor:
    """Zero each row of c (the null class) with probability p_uncond: a per-sample Bernoulli mask."""
    keep = torch.rand(c.shape[0], generator=generator, device=c.device) >= p_uncond
    return c * keep[:, None].to(c.dtype)


def denoiser_loss(model: nn.Module, x: Tensor, *, sigma: float, generator: torch.Generator,
                  noise: Tensor | None = None) -> tuple[Tensor, None]:
    """||D(x + sigma eps) - x||^2 (docs/course.md 3.5)."""
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _mse(model(x + sigma * noise), x), None


def pure_noise_loss(model: nn.Module, x: Tensor, *, generator: torch.Generator,
                    noise: Tensor | None = None) -> tuple[Tensor, None]:
    """||D(eps) - x||^2: the optimum is the mean training image (docs/course.md 3.5)."""
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _mse(model(noise), x), None


def ddpm_loss(model: nn.Module, x0: Tensor, c: Tensor | None, *, alphas_cumprod: Tensor,
              generator: torch.Generator, noise: Tensor | None = None, i: Tensor | None = None,
              min_snr_gamma: float | None = None) -> tuple[Tensor, Tensor]:
    """||eps - eps_theta(x_i, (i+1)/T, c)||^2 with i ~ U{0..T-1}, x_i = sqrt(ab_i) x0 + sqrt(1-ab_i) eps.

    `min_snr_gamma` g scales each sample's loss by min(SNR_i, g) / SNR_i, SNR_i = ab_i / (1 - ab_i)
    (min-SNR weighting, Hang et al. 2023), so the low-noise steps count less; None leaves the
    course's unweighted loss."""
    T = alphas_cumprod.shape[0]
    if i is None:
        i = torch.randint(0, T, (x0.shape[0],), generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = add_noise(x0, i, alphas_cumprod, noise)
    t = unet_time(i, T)
    losses = _mse(model(x_t, t, c), noise)
    if min_snr_gamma is not None:
        ab = alphas_cumprod[i].float()
        snr = ab / (1 - ab)
        losses = losses * snr.clamp(max=min_snr_gamma) / snr
    return losses, t


def sample_flow_time(n: int, generator: torch.Generator, device, dtype=torch.float32,
                     density: str = "uniform") -> Tensor:
    """(n,) flow times: "uniform" U[0, 1), or "logit-normal" sigmoid(N(0, 1)) in (0, 1), which
    puts more draws mid-way (Esser et al. 2024, rectified-flow transformers)."""
    if density == "logit-normal":
        return torch.sigmoid(torch.randn(n, generator=generator, device=device, dtype=dtype))
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


def flow_loss(model: nn.Module, x1: Tensor, c: Tensor | None, *, generator: torch.Generator,
              noise: Tensor | None = None, t: Tensor | None = None,
              time_sampling: str = "uniform") -> tuple[Tensor, Tensor]:
    """||(x1 - x0) - u_theta(x_t, t, c)||^2, x_t = (1-t) x0 + t x1, x0 ~ N(0, I), t drawn by
    `time_sampling` (sample_flow_time; the course: U[0, 1))."""
    if t is None:
        t = sample_flow_time(x1.shape[0], generator, x1.device, x1.dtype, time_sampling)
    if noise is None:
        noise = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    tt = t.view(-1, 1, 1, 1)
    x_t = (1 - tt) * noise + tt * x1
    return _mse(model(x_t, t, c), x1 - noise), t


def make_objective(cfg: TrainConfig, alphas_cumprod: Tensor | None) -> Objective:
    """`objective(model, x, c, generator) -> (losses (B,), t (B,) | None)` for cfg.kind.

    c is the clean one-hot (or None); class dropout (p_uncond) is applied here.
    """
    def objective(model: nn.Module, x: Tensor, c: Tensor | None, generator: torch.Generator):
        if c is not None and cfg.p_uncond > 0:
            c = drop_classes(c, cfg.p_uncond, generator)
        if cfg.kind == "denoiser":
            return denoiser_loss(model, x, sigma=cfg.sigma, generator=generator)
        if cfg.kind == "pure-noise":
            return pure_noise_loss(model, x, generator=generator)
        if cfg.kind == "ddpm":
            return ddpm_loss(model, x, c, alphas_cumprod=alphas_cumprod, generator=generator,
                             min_snr_gamma=cfg.min_snr_gamma)
        return flow_loss(model, x, c, generator=generator, time_sampling=cfg.time_sampling)

    return objective


def loss_by_t_bins(losses: Tensor, t: Tensor | None, bins: int = 10) -> tuple[Tensor, Tensor]:
    """Sum and count of per-sample losses in `bins` equal t-bins over [0, 1]: two (bins,) tensors."""
    sums = losses.new_zeros(bins, dtype=torch.float32)
    counts = losses.new_zeros(bins, dtype=torch.float32)
    if t is not None:
        idx = (t.float() * bins).long().clamp(0, bins - 1)
        sums.index_add_(0, idx, losses.detach().float())
        counts.index_add_(0, idx, torch.ones_like(losses, dtype=torch.float32))
    return sums, counts
