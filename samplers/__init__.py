"""Diffusion Lab samplers: every Part A algorithm once, over any noise- or velocity-predicting model.

Images are (B, C, H, W) in [-1, 1]; timesteps are 0-indexed ints with -1 meaning "clean".
"""
from .denoise import blur_denoise, iterative_denoise, one_step_denoise
from .editing import inpaint, sdedit
from .flow import flow_sample
from .forward import add_noise, renoise
from .guidance import guided_output
from .illusions import CombinedNoise, hybrid_image, three_band_hybrid, visual_anagram
from .parameterization import VelocityAsEps, predict_x0
from .schedules import linear_alphas_cumprod, repaint_timesteps, spaced_timesteps, strided_timesteps
from .steps import ddim_step, ddpm_step
from .views import VIEW_NAMES, View, get_view

__all__ = [
    "CombinedNoise", "VIEW_NAMES", "VelocityAsEps", "View", "add_noise", "blur_denoise", "ddim_step",
    "ddpm_step", "flow_sample", "get_view", "guided_output", "hybrid_image", "inpaint",
    "iterative_denoise", "linear_alphas_cumprod", "one_step_denoise", "predict_x0", "renoise",
    "repaint_timesteps", "sdedit", "spaced_timesteps", "strided_timesteps", "three_band_hybrid",
    "visual_anagram",
]
