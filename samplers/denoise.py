"""Denoisers of course Part A: classical blur, one-step x0 estimate, and the iterative sampler."""
import torch
import torchvision.transforms.functional as TF

from .forward import renoise
from .guidance import guided_output, split_output
from .parameterization import predict_x0
from .steps import ddim_step, ddpm_step


@torch.no_grad()
def blur_denoise(x, kernel_size=5, sigma=2.0):
    """Classical denoising (course 1.2): Gaussian blur of x (B, C, H, W)."""
    return TF.gaussian_blur(x, kernel_size, sigma)


@torch.no_grad()
def one_step_denoise(model, x_t, t, alphas_cumprod, cond=None, uncond=None, guidance_scale=1.0):
    """Clean estimate x0_hat from one (guided) noise prediction at the int timestep t (course 1.3)."""
    eps, _ = split_output(guided_output(model, x_t, t, cond, uncond, guidance_scale), x_t.shape[1])
    return predict_x0(x_t, eps, t, alphas_cumprod)


@torch.no_grad()
def iterative_denoise(model, x, timesteps, alphas_cumprod, *, i_start=0, cond=None, uncond=None,
                      guidance_scale=1.0, generator=None, callback=None, step="ddpm", eta=0.0,
                      project=None):
    """Walk x (B, C, H, W), at noise level timesteps[i_start], to timesteps[-1] and return it.

    model(x, t, cond) gets the int t and returns (B, C, H, W) noise or (B, 2C, H, W) noise +
    variance values; with `uncond` and guidance_scale != 1 it runs CFG in one batched call per
    step (see guided_output). Any callable works: the illusions pass combined-noise models.
    step: "ddpm" (ddpm_step; learned-range variance if the model returns 2C channels) or "ddim"
    (ddim_step with eta). A rising pair timesteps[i] < timesteps[i + 1] re-noises with
    q(x_t | x_s) instead (RePaint schedules). project(x, t) -> x, if given, is applied after every
    denoising step to the new x at t = timesteps[i + 1] (inpainting's known-region replacement).
    callback(i, t, x, x0_hat) is called at each denoising step with x at t = timesteps[i], before
    the update.
    """
    if step not in ("ddpm", "ddim"):
        raise ValueError(f"step must be 'ddpm' or 'ddim', got {step!r}")
    if not 0 <= i_start < len(timesteps) - 1:
        raise ValueError(f"i_start must be in [0, {len(timesteps) - 2}] for {len(timesteps)} "
                         f"timesteps, got {i_start}")
    for i in range(i_start, len(timesteps) - 1):
        t, t_next = int(timesteps[i]), int(timesteps[i + 1])
        if t_next > t:
            x = renoise(x, t, t_next, alphas_cumprod, generator)
            continue
        eps, var = split_output(guided_output(model, x, t, cond, uncond, guidance_scale), x.shape[1])
        if callback is not None:
            callback(i, t, x, predict_x0(x, eps, t, alphas_cumprod))
        if step == "ddpm":
            x = ddpm_step(x, eps, t, t_next, alphas_cumprod, var, generator)
        else:
            x = ddim_step(x, eps, t, t_next, alphas_cumprod, eta, generator)
        if project is not None:
            x = project(x, t_next)
    return x
