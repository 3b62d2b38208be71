"""Visual anagrams and hybrid images (course 1.8, 1.9) as noise models for the VP samplers.

Each function returns a `CombinedNoise`, a model(x, t) to pass to sample_ddpm or sample_ddim.
"""

import torch

from .guidance import expand_batch, guided_output
from .views import get_view


class CombinedNoise:
    """A noise model model(x, t) combining K (view, cond) pairs of model(x, t, cond) into one.

    eps = reduce_k inverse_view_k(CFG_eps(view_k(x), cond_k)), reduce "mean" (anagrams) or "sum"
    (factorized hybrids); variance values (if the model returns 2C channels) are averaged after
    inverse_variance_k. All K views, conditional and unconditional, go through ONE model call of
    batch 2KB (KB without CFG). Views must keep the image shape (square images for rotations).
    """

    def __init__(self, model, views, conds, uncond=None, guidance_scale=1.0, reduction="mean"):
        if len(views) != len(conds) or not views:
            raise ValueError(
                f"need one cond per view, got {len(conds)} conds for {len(views)} views"
            )
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.model, self.views, self.conds = model, [get_view(v) for v in views], list(conds)
        self.uncond, self.guidance_scale, self.reduction = uncond, guidance_scale, reduction

    def __call__(self, x, t):
        b, c, k = x.shape[0], x.shape[1], len(self.views)
        viewed = [v.view(x) for v in self.views]
        if any(y.shape != x.shape for y in viewed):
            raise ValueError(
                "every view must keep the image shape (use square images for rotations/transpose)"
            )
        conds = torch.cat([expand_batch(cd, b) for cd in self.conds])
        uncond = None if self.uncond is None else torch.cat([expand_batch(self.uncond, b)] * k)
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


def anagram_noise(model, conds, views, uncond=None, guidance_scale=1.0):
    """An image that reads as conds[k] under views[k] (View objects or names): the mean of the
    inverse-viewed noise. Course 1.8 is conds=[p1, p2], views=["identity", "flip"]."""
    return CombinedNoise(model, views, conds, uncond, guidance_scale, "mean")


HYBRID_KERNEL_SIZE, HYBRID_SIGMA = 33, 2.0  # the course's low-pass, at 64 px


def hybrid_noise(
    model,
    cond_far,
    cond_near,
    uncond=None,
    guidance_scale=1.0,
    kernel_size=HYBRID_KERNEL_SIZE,
    sigma=HYBRID_SIGMA,
):
    """Factorized diffusion (course 1.9): eps = lowpass(eps_far) + highpass(eps_near).

    kernel_size and sigma are given at 64 px and scale with the image (views.scaled_blur).
    """
    views = [
        get_view("low_pass", sigma=sigma, kernel_size=kernel_size),
        get_view("high_pass", sigma=sigma, kernel_size=kernel_size),
    ]
    return CombinedNoise(model, views, [cond_far, cond_near], uncond, guidance_scale, "sum")


def three_band_noise(
    model,
    cond_far,
    cond_mid,
    cond_near,
    uncond=None,
    guidance_scale=1.0,
    kernel_size=HYBRID_KERNEL_SIZE,
    sigmas=(1.0, 2.0),
):
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
