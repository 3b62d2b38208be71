"""Image editing with a noise model (course 1.7): SDEdit / img2img and inpainting (with RePaint)."""

from __future__ import annotations

import torch
from torch import Tensor

from .forward import add_noise, randn_like_gen
from .sampling import Callback, Model, ProjectingSampler, Sampler, sample_ddpm
from .schedules import Schedule, repaint_timesteps


@torch.no_grad()
def sdedit(
    model: Model,
    image: Tensor,
    schedule: Schedule,
    *,
    sampler: Sampler = sample_ddpm,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Noise image (B, C, H, W) in [-1, 1] to schedule.times[0], then sample along `schedule`.

    Start part-way with a slice: schedule[i_start:] (small i_start = more noise = bigger edits).
    With a guided model of another prompt this is the course's text-conditioned image-to-image
    translation (1.7.3).
    """
    if schedule.alphas_cumprod is None:
        raise ValueError("sdedit walks a VP schedule (wrap a flow model in VelocityAsEps)")
    if len(schedule) < 2:
        raise ValueError(
            f"sdedit needs a schedule of at least 2 timesteps, got {list(schedule.times)}; "
            "i_start must leave one step to take"
        )
    x = add_noise(image, int(schedule.times[0]), schedule.alphas_cumprod, generator=generator)
    return sampler(model, x, schedule, generator=generator, callback=callback)


def check_mask(mask: Tensor, image: Tensor) -> None:
    """Validate an inpainting mask (1|B, 1|C, H, W) with values in [0, 1], 1 = regenerate."""
    b, c, h, w = image.shape
    if (
        mask.ndim != 4
        or mask.shape[1] not in (1, c)
        or mask.shape[2:] != (h, w)
        or (1 not in (b, mask.shape[0]) and mask.shape[0] != b)
    ):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not fit image {tuple(image.shape)}: "
            f"expected (1 or {b}, 1 or {c}, {h}, {w})"
        )
    if mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask values must lie in [0, 1] (1 = regenerate, 0 = keep)")
    area = mask.flatten(1).sum(1)
    if (area == 0).any():
        raise ValueError("mask is empty: nothing to regenerate (1 marks the region to inpaint)")
    if (area == mask[0].numel()).any():
        raise ValueError(
            "mask covers the whole image: nothing of the original is kept; "
            "sample from pure noise instead"
        )


@torch.no_grad()
def inpaint(
    model: Model,
    image: Tensor,
    mask: Tensor,
    schedule: Schedule,
    *,
    sampler: ProjectingSampler = sample_ddpm,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    jump_length: int = 0,
    jump_n_sample: int = 1,
) -> Tensor:
    """Regenerate where mask == 1 and keep image (B, C, H, W) elsewhere (course A.5, RePaint).

    Starts from pure noise; after every denoising step the new x at t_prev becomes
    mask x + (1 - mask) add_noise(image, t_prev) (at t_prev = -1 the original itself). With
    jump_length > 0 and jump_n_sample > 1 the schedule resamples as RePaint does (see
    repaint_timesteps): the combined image is re-noised with q(x_t | x_t_prev) and denoised again.
    """
    ab = schedule.alphas_cumprod
    if ab is None:
        raise ValueError("inpaint walks a VP schedule (wrap a flow model in VelocityAsEps)")
    check_mask(mask, image)
    mask = mask.to(image.device, image.dtype)
    image = image.expand(max(image.shape[0], mask.shape[0]), *image.shape[1:])

    def keep(x: Tensor, t: int) -> Tensor:
        return mask * x + (1 - mask) * add_noise(image, t, ab, generator=generator)

    times = [int(t) for t in schedule.times]
    resampled = Schedule.vp(ab, repaint_timesteps(times, jump_length, jump_n_sample))
    return sampler(
        model,
        randn_like_gen(image, generator),
        resampled,
        generator=generator,
        callback=callback,
        project=keep,
    )
