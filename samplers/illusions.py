"""Visual anagrams and hybrid images (course 1.8, 1.9) as noise models for the VP samplers.

Each function returns a `CombinedNoise`, a model(x, t) to pass to sample_ddpm or sample_ddim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .course import HYBRID_KERNEL_SIZE, HYBRID_SIGMA
from .guidance import ConditionalModel, expand_batch, guided_output
from .views import View, get_view

ViewLike = View | str


class CombinedNoise:
    """A noise model model(x, t) combining K (view, cond) pairs of model(x, t, cond) into one.

    eps = reduce_k inverse_view_k(CFG_eps(view_k(x), cond_k)), reduce "mean" (anagrams) or "sum"
    (factorized hybrids); variance values (if the model returns 2C channels) are averaged after
    inverse_variance_k. All K views, conditional and unconditional, go through ONE model call of
    batch 2KB (KB without CFG). Views must keep the image shape (square images for rotations).
    """

    def __init__(
        self,
        model: ConditionalModel,
        views: Sequence[ViewLike],
        conds: Sequence[Tensor | None],
        uncond: Tensor | None = None,
        guidance_scale: float = 1.0,
        reduction: Literal["mean", "sum"] = "mean",
    ) -> None:
        if len(views) != len(conds) or not views:
            raise ValueError(
                f"need one cond per view, got {len(conds)} conds for {len(views)} views"
            )
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.model, self.views, self.conds = model, [get_view(v) for v in views], list(conds)
        self.uncond, self.guidance_scale, self.reduction = uncond, guidance_scale, reduction

    def __call__(self, x: Tensor, t: int | Tensor) -> Tensor:
        b, c, k = x.shape[0], x.shape[1], len(self.views)
        viewed = [v.view(x) for v in self.views]
        if any(y.shape != x.shape for y in viewed):
            raise ValueError(
                "every view must keep the image shape (use square images for rotations/transpose)"
            )
        conds = torch.cat([_batch(cd, b) for cd in self.conds])
        uncond = None if self.uncond is None else torch.cat([_batch(self.uncond, b)] * k)
        out = guided_output(
            self.model, torch.cat(viewed), t, conds, uncond, self.guidance_scale
        ).chunk(k)
        eps = torch.stack([v.inverse_view(o[:, :c]) for v, o in zip(self.views, out, strict=False)])
        eps = eps.mean(0) if self.reduction == "mean" else eps.sum(0)
        if out[0].shape[1] == c:
            return eps
        var = torch.stack(
            [v.inverse_variance(o[:, c:]) for v, o in zip(self.views, out, strict=False)]
        ).mean(0)
        return torch.cat([eps, var], dim=1)


def _batch(c: Tensor | None, batch: int) -> Tensor:
    """A view's conditioning expanded to `batch` (views need one: a prompt each)."""
    out = expand_batch(c, batch)
    if out is None:
        raise ValueError("every view needs a condition (a prompt embedding), got None")
    return out


def anagram_noise(
    model: ConditionalModel,
    conds: Sequence[Tensor | None],
    views: Sequence[ViewLike],
    uncond: Tensor | None = None,
    guidance_scale: float = 1.0,
) -> CombinedNoise:
    """An image that reads as conds[k] under views[k] (View objects or names): the mean of the
    inverse-viewed noise. Course 1.8 is conds=[p1, p2], views=["identity", "flip"]."""
    return CombinedNoise(model, views, conds, uncond, guidance_scale, "mean")


def hybrid_noise(
    model: ConditionalModel,
    cond_far: Tensor | None,
    cond_near: Tensor | None,
    uncond: Tensor | None = None,
    guidance_scale: float = 1.0,
    kernel_size: int = HYBRID_KERNEL_SIZE,
    sigma: float = HYBRID_SIGMA,
) -> CombinedNoise:
    """Factorized diffusion (course 1.9): eps = lowpass(eps_far) + highpass(eps_near).

    kernel_size and sigma are given at 64 px and scale with the image (views.scaled_blur).
    """
    views = [
        get_view("low_pass", sigma=sigma, kernel_size=kernel_size),
        get_view("high_pass", sigma=sigma, kernel_size=kernel_size),
    ]
    return CombinedNoise(model, views, [cond_far, cond_near], uncond, guidance_scale, "sum")


def three_band_noise(
    model: ConditionalModel,
    cond_far: Tensor | None,
    cond_mid: Tensor | None,
    cond_near: Tensor | None,
    uncond: Tensor | None = None,
    guidance_scale: float = 1.0,
    kernel_size: int = HYBRID_KERNEL_SIZE,
    sigmas: tuple[float, float] = (1.0, 2.0),
) -> CombinedNoise:
    """Three-band factorized diffusion: low band of eps_far + mid of eps_mid + high of eps_near.

    The bands come from blurring with sigmas[0] then sigmas[1] (views.FrequencyBand), at 64 px.
    """
    views = [
        get_view(name, sigmas=sigmas, kernel_size=kernel_size)
        for name in ("triple_low_pass", "triple_mid_pass", "triple_high_pass")
    ]
    return CombinedNoise(
        model, views, [cond_far, cond_mid, cond_near], uncond, guidance_scale, "sum"
    )
