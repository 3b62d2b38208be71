"""Training objectives of Part B (docs/course.md 3.5-3.7).

Each returns per-sample losses (B,) and the time t (B,) in [0, 1] it drew (None for single-step
denoisers), so the trainer can average the loss and bin it by t. Every draw goes through the
`generator` passed in; `noise`/`t` may be given to make a loss deterministic (tests).
  x: (B, 1, 28, 28): [0, 1] for the denoisers, [-1, 1] for DDPM and flow.
  c: (B, K) one-hot labels or None (time-only models).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from samplers import add_noise

from .config import TrainOptions
from .pretrained import unet_time

Objective = Callable[..., tuple[Tensor, Tensor | None]]


def _mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def drop_classes(c: Tensor, p_uncond: float, generator: torch.Generator) -> Tensor:
    """Zero each row of c (the null class) with probability p_uncond: a per-sample Bernoulli
    mask."""
    keep = torch.rand(c.shape[0], generator=generator, device=c.device) >= p_uncond
    return c * keep[:, None].to(c.dtype)


def denoiser_loss(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    generator: torch.Generator,
    noise: Tensor | None = None,
) -> tuple[Tensor, None]:
    """||D(x + sigma eps) - x||^2 (docs/course.md 3.5)."""
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _mse(model(x + sigma * noise), x), None


def pure_noise_loss(
    model: nn.Module, x: Tensor, *, generator: torch.Generator, noise: Tensor | None = None
) -> tuple[Tensor, None]:
    """||D(eps) - x||^2: the optimum is the mean training image (docs/course.md 3.5)."""
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _mse(model(noise), x), None


def sample_ddpm_step(
    n: int, alphas_cumprod: Tensor, generator: torch.Generator, density: str = "uniform"
) -> Tensor:
    """(n,) step indices in [0, T): "uniform" U{0..T-1} (the course), or "logit-normal": flow's
    logit-normal noise levels on this schedule. A flow state at time tau is a VP state with
    log-SNR 2 logit(tau), so logit(tau) ~ N(0, 1) is log-SNR ~ N(0, 2^2); step i is drawn with
    that density times the width of its log-SNR interval (truncated to the schedule's range)."""
    T = alphas_cumprod.shape[0]
    if density == "uniform":
        return torch.randint(0, T, (n,), generator=generator, device=alphas_cumprod.device)
    ab = alphas_cumprod.double()
    log_snr = (ab / (1 - ab)).log()
    weights = torch.exp(-log_snr.square() / 8) * torch.gradient(log_snr)[0].abs()
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def ddpm_loss_weights(
    alphas_cumprod: Tensor, weighting: str = "none", min_snr_gamma: float = 5.0
) -> Tensor | None:
    """(T,) weights of step i's noise loss, mean 1 over the T steps (so the loss keeps the course's
    scale), or None for "none" (the course's unweighted loss). With SNR_i = ab_i / (1 - ab_i):
    "min-snr": min(SNR_i, gamma) / SNR_i (Hang et al. 2023): the low-noise steps count less.
    "flow": (1 + SNR_i^-1/2)^2, the weight flow matching's velocity loss puts on the same noise
    level (a VP state is a flow state at tau = sqrt(ab) / (sqrt(ab) + sqrt(1 - ab)), and a velocity
    error is a noise error / tau): the high-noise steps count more."""
    if weighting == "none":
        return None
    snr = alphas_cumprod.float() / (1 - alphas_cumprod.float())
    w = snr.clamp(max=min_snr_gamma) / snr if weighting == "min-snr" else (1 + snr.rsqrt()) ** 2
    return w / w.mean()


def ddpm_loss(
    model: nn.Module,
    x0: Tensor,
    c: Tensor | None,
    *,
    alphas_cumprod: Tensor,
    generator: torch.Generator,
    noise: Tensor | None = None,
    i: Tensor | None = None,
    weights: Tensor | None = None,
    time_sampling: str = "uniform",
) -> tuple[Tensor, Tensor]:
    """||eps - eps_theta(x_i, (i+1)/T, c)||^2, x_i = sqrt(ab_i) x0 + sqrt(1-ab_i) eps, i drawn by
    `time_sampling` (sample_ddpm_step; the course: U{0..T-1}), times weights[i] when `weights`
    (ddpm_loss_weights) is given."""
    T = alphas_cumprod.shape[0]
    if i is None:
        i = sample_ddpm_step(x0.shape[0], alphas_cumprod, generator, time_sampling)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = add_noise(x0, i, alphas_cumprod, noise)
    t = unet_time(i, T)
    losses = _mse(model(x_t, t, c), noise)
    if weights is not None:
        losses = losses * weights[i]
    return losses, t


def sample_flow_time(
    n: int, generator: torch.Generator, device, dtype=torch.float32, density: str = "uniform"
) -> Tensor:
    """(n,) flow times: "uniform" U[0, 1), or "logit-normal" sigmoid(N(0, 1)) in (0, 1), which
    puts more draws mid-way (Esser et al. 2024, rectified-flow transformers)."""
    if density == "logit-normal":
        return torch.sigmoid(torch.randn(n, generator=generator, device=device, dtype=dtype))
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


def flow_loss(
    model: nn.Module,
    x1: Tensor,
    c: Tensor | None,
    *,
    generator: torch.Generator,
    noise: Tensor | None = None,
    t: Tensor | None = None,
    time_sampling: str = "uniform",
) -> tuple[Tensor, Tensor]:
    """||(x1 - x0) - u_theta(x_t, t, c)||^2, x_t = (1-t) x0 + t x1, x0 ~ N(0, I), t drawn by
    `time_sampling` (sample_flow_time; the course: U[0, 1))."""
    if t is None:
        t = sample_flow_time(x1.shape[0], generator, x1.device, x1.dtype, time_sampling)
    if noise is None:
        noise = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    tt = t.view(-1, 1, 1, 1)
    x_t = (1 - tt) * noise + tt * x1
    return _mse(model(x_t, t, c), x1 - noise), t


def make_objective(cfg: TrainOptions, alphas_cumprod: Tensor | None) -> Objective:
    """`objective(model, x, c, generator) -> (losses (B,), t (B,) | None)` for cfg.kind.

    c is the clean one-hot (or None); class dropout (p_uncond) is applied here.
    """
    weights = (
        ddpm_loss_weights(alphas_cumprod, cfg.loss_weighting, cfg.min_snr_gamma)
        if cfg.kind == "ddpm"
        else None
    )

    def objective(model: nn.Module, x: Tensor, c: Tensor | None, generator: torch.Generator):
        if c is not None and cfg.p_uncond > 0:
            c = drop_classes(c, cfg.p_uncond, generator)
        if cfg.kind == "denoiser":
            return denoiser_loss(model, x, sigma=cfg.sigma, generator=generator)
        if cfg.kind == "pure-noise":
            return pure_noise_loss(model, x, generator=generator)
        if cfg.kind == "ddpm":
            return ddpm_loss(
                model,
                x,
                c,
                alphas_cumprod=alphas_cumprod,
                generator=generator,
                weights=weights,
                time_sampling=cfg.time_sampling,
            )
        return flow_loss(model, x, c, generator=generator, time_sampling=cfg.time_sampling)

    return objective


LOSS_BINS = 10  # t-bins of the logged loss (metrics.jsonl: loss_t_bin)


def loss_by_t_bins(
    losses: Tensor, t: Tensor | None, bins: int = LOSS_BINS
) -> tuple[Tensor, Tensor]:
    """Sum and count of per-sample losses in `bins` equal t-bins over [0, 1]: two (bins,)
    tensors."""
    sums = losses.new_zeros(bins, dtype=torch.float32)
    counts = losses.new_zeros(bins, dtype=torch.float32)
    if t is not None:
        idx = (t.float() * bins).long().clamp(0, bins - 1)
        sums.index_add_(0, idx, losses.detach().float())
        counts.index_add_(0, idx, torch.ones_like(losses, dtype=torch.float32))
    return sums, counts
