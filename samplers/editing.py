"""Image editing with a noise model (course 1.7): SDEdit / img2img and inpainting (with RePaint)."""
import torch

from .denoise import iterative_denoise
from .forward import add_noise, randn_like_gen
from .schedules import repaint_timesteps


@torch.no_grad()
def sdedit(model, image, i_start, timesteps, alphas_cumprod, *, cond=None, uncond=None,
           guidance_scale=1.0, generator=None, callback=None, step="ddpm"):
    """Noise image (B, C, H, W) in [-1, 1] to timesteps[i_start], then denoise from there.

    Small i_start = more noise = bigger edits. With a different prompt as `cond` this is the
    course's text-conditioned image-to-image translation (1.7.3).
    """
    if not 0 <= i_start < len(timesteps) - 1:
        raise ValueError(f"i_start must be in [0, {len(timesteps) - 2}] for {len(timesteps)} "
                         f"timesteps, got {i_start}")
    x = add_noise(image, timesteps[i_start], alphas_cumprod, generator=generator)
    return iterative_denoise(model, x, timesteps, alphas_cumprod, i_start=i_start, cond=cond,
                             uncond=uncond, guidance_scale=guidance_scale, generator=generator,
                             callback=callback, step=step)


def check_mask(mask, image):
    """Validate an inpainting mask (1|B, 1|C, H, W) with values in [0, 1], 1 = regenerate."""
    b, c, h, w = image.shape
    if (mask.ndim != 4 or mask.shape[1] not in (1, c) or mask.shape[2:] != (h, w)
            or (1 not in (b, mask.shape[0]) and mask.shape[0] != b)):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not fit image {tuple(image.shape)}: "
                         f"expected (1 or {b}, 1 or {c}, {h}, {w})")
    if mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask values must lie in [0, 1] (1 = regenerate, 0 = keep)")
    area = mask.flatten(1).sum(1)
    if (area == 0).any():
        raise ValueError("mask is empty: nothing to regenerate (1 marks the region to inpaint)")
    if (area == mask[0].numel()).any():
        raise ValueError("mask covers the whole image: nothing of the original is kept; "
                         "sample from pure noise (iterative_denoise) instead")


@torch.no_grad()
def inpaint(model, image, mask, timesteps, alphas_cumprod, *, cond=None, uncond=None,
            guidance_scale=1.0, generator=None, callback=None, jump_length=0, jump_n_sample=1,
            step="ddpm"):
    """Regenerate where mask == 1 and keep image (B, C, H, W) elsewhere (course A.5, RePaint).

    Starts from pure noise; after every denoising step the new x at t_prev becomes
    mask x + (1 - mask) add_noise(image, t_prev) (at t_prev = -1 the original itself). With
    jump_length > 0 and jump_n_sample > 1 the schedule resamples as RePaint does (see
    repaint_timesteps): the combined image is re-noised with q(x_t | x_t_prev) and denoised again.
    """
    check_mask(mask, image)
    mask = mask.to(image.device, image.dtype)
    image = image.expand(max(image.shape[0], mask.shape[0]), *image.shape[1:])

    def keep(x, t):
        return mask * x + (1 - mask) * add_noise(image, t, alphas_cumprod, generator=generator)

    x = randn_like_gen(image, generator)
    return iterative_denoise(model, x, repaint_timesteps(timesteps, jump_length, jump_n_sample),
                             alphas_cumprod, cond=cond, uncond=uncond, guidance_scale=guidance_scale,
                             generator=generator, callback=callback, step=step, project=keep)
