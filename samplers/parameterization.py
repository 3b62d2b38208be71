"""Conversions between what a model predicts: noise (eps), clean image (x0), flow velocity.

This is the one place that converts velocity <-> noise.
VP state: x = sqrt(ab) x_data + sqrt(1-ab) eps.
Flow state (course convention): x_tau = (1 - tau) noise + tau x_data, velocity v = x_data - noise.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .schedules import alpha_bar


def predict_denoised(x_t: Tensor, eps: Tensor, t: int | Tensor, alphas_cumprod: Tensor) -> Tensor:
    """Clean estimate (x_t - sqrt(1 - ab[t]) eps) / sqrt(ab[t]). t an int or (B,) tensor."""
    ab = alpha_bar(alphas_cumprod, t, x_t)
    return (x_t - (1 - ab).sqrt().to(x_t.dtype) * eps) / ab.sqrt().to(x_t.dtype)


def flow_denoised(x_t: Tensor, velocity: Tensor, t: float) -> Tensor:
    """Clean estimate x_t + (1 - t) v of the flow state at time t in [0, 1]."""
    return x_t + (1 - t) * velocity


class VelocityAsEps:
    """Wrap a velocity model (x_flow, tau (B,) float, *args) -> v as a noise model
    (x_vp, t_int, *args) -> eps; extra arguments (a condition) pass through.

    A VP state at ab[t] is a rescaled flow state: x_flow = x_vp / (sqrt(ab) + sqrt(1-ab)) at
    tau = sqrt(ab) / (sqrt(ab) + sqrt(1-ab)); then eps = x_flow - tau v. So every VP algorithm
    (sample_ddpm, sample_ddim, SDEdit, inpainting, illusions) runs on a flow model.
    """

    def __init__(self, velocity_model: Any, alphas_cumprod: Tensor) -> None:
        self.velocity_model, self.alphas_cumprod = velocity_model, alphas_cumprod

    def __call__(self, x: Tensor, t: int | Tensor, *args: Any) -> Tensor:
        ab = alpha_bar(self.alphas_cumprod, t, x)  # 0-dim for an int t, (B, 1, 1, 1) for a tensor
        scale = ab.sqrt() + (1 - ab).sqrt()
        tau = (ab.sqrt() / scale).to(x.dtype)
        x_flow = x / scale.to(x.dtype)
        v: Tensor = self.velocity_model(x_flow, tau.flatten().expand(x.shape[0]), *args)
        return x_flow - tau * v
