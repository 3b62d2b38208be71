"""Every Part A deliverable as a function of a Backend: each returns labelled Figures of tensors
(images in [-1, 1]); `python -m samplers` only parses options and saves them.

Noise levels are given as in the course, on IF's 1000-step schedule: a timestep t (forward: 250,
500, 750) or an index i into the course's strided list [990, 960, ..., 0] (SDEdit levels, i_start).
On another backend or timestep list they map to the same fraction of the noise schedule: t becomes
round(t T / 1000) (MNIST, T = 300: 75, 150, 225), and index i the entry of the sampling list
nearest to that t. On IF with the default list both maps are the identity.

Tasks that sample take `sampler`, a name of the sampler table (samplers.table) that walks VP
schedules, as a backend's noise model needs: ddpm (the course's, the default), ddim, dpmpp_2m.
Inpainting stays DDPM (it projects the known region after each step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from samplers.course import (
    ANAGRAM_PROMPTS,
    COURSE_SAMPLER,
    COURSE_T,
    DENOISE_CFG,
    HYBRID_KERNEL_SIZE,
    HYBRID_PROMPTS,
    HYBRID_SIGMA,
    NOISE_TS,
    SDEDIT_LEVELS,
)
from samplers.denoise import blur_denoise, one_step_denoise
from samplers.editing import inpaint as inpaint_image
from samplers.editing import sdedit as sdedit_image
from samplers.forward import add_noise
from samplers.illusions import anagram_noise, hybrid_noise
from samplers.sampling import Callback, Guided, Sampler
from samplers.schedules import Schedule, spaced_timesteps, strided_timesteps
from samplers.table import sampler_spec
from samplers.views import get_view

from .backends.base import Backend

COURSE_TIMESTEPS = strided_timesteps()  # [990, 960, ..., 30, 0]


@dataclass
class Figure:
    """One output picture: rows of images (each (N, C, H, W) in [-1, 1]) with captions, and
    optional GIF frames (each (B, C, H, W))."""

    name: str
    rows: list[Tensor]
    row_labels: list[str] = field(default_factory=list)
    col_labels: list[str] = field(default_factory=list)
    frames: list[Tensor] = field(default_factory=list)


def make_generator(seed: int) -> torch.Generator:
    """The one generator of a task. On the CPU, so a seed gives the same noise on every device."""
    return torch.Generator().manual_seed(seed)


def backend_schedule(
    backend: Backend, stride: int | None = None, steps: int | None = None
) -> Schedule:
    """The VP schedule a task walks: the backend's default timesteps, the course's strided list
    with another `stride` (from the backend's first timestep down to 0), or `steps` evenly spaced
    entries."""
    if stride is not None and steps is not None:
        raise ValueError("give either stride or steps, not both")
    if stride is not None:
        timesteps = strided_timesteps(start=int(backend.timesteps[0]), stride=stride)
    elif steps is not None:
        timesteps = spaced_timesteps(len(backend.alphas_cumprod), steps)
    else:
        timesteps = backend.timesteps
    return Schedule.vp(backend.alphas_cumprod, timesteps)


def scaled_t(backend: Backend, t: int) -> int:
    """A course timestep (of 1000) -> the backend's schedule, same fraction of T."""
    if not 0 <= t < COURSE_T:
        raise ValueError(f"timesteps are given on the course's 0..{COURSE_T - 1} scale, got {t}")
    num = len(backend.alphas_cumprod)
    return min(num - 1, round(t * num / COURSE_T))


def course_t(t: int, steps: int) -> int:
    """Step t of a schedule of `steps` (T) timesteps on the course's scale of 1000 (the
    inverse of scaled_t, to the nearest)."""
    return round(int(t) * COURSE_T / steps)


def time_label(backend: Backend, t: int) -> str:
    """How figures label the backend's step t: "t=750" on the course's scale (IF's own); on a
    model of another T, the course's t and then the model's step, "t=250 (75/300)"."""
    steps = len(backend.alphas_cumprod)
    if steps == COURSE_T:
        return f"t={int(t)}"
    return f"t={course_t(t, steps)} ({int(t)}/{steps})"


def level_index(backend: Backend, schedule: Schedule, level: int) -> int:
    """Course index `level` into [990, ..., 0] -> the index into `schedule` nearest in noise."""
    if not 0 <= level < len(COURSE_TIMESTEPS) - 1:
        raise ValueError(
            f"levels index the course's {len(COURSE_TIMESTEPS)} strided timesteps: "
            f"need 0 <= level < {len(COURSE_TIMESTEPS) - 1}, got {level}"
        )
    target = scaled_t(backend, COURSE_TIMESTEPS[level])
    times = schedule.times
    return min(range(len(times) - 1), key=lambda i: abs(times[i] - target))


def _noise(backend: Backend, n: int, generator: torch.Generator) -> Tensor:
    shape = (n, backend.channels, backend.image_size, backend.image_size)
    return torch.randn(shape, generator=generator).to(backend.device)


def noise_sampler(name: str) -> Sampler:
    """The table's sampler `name`, if it walks VP schedules as a backend's noise model needs
    (ValueError naming the choices otherwise)."""
    return sampler_spec(name, "vp").function


def cfg_scale(backend: Backend, guidance_scale: float | None) -> float:
    """`guidance_scale`, or the backend's own default (IF 7 as in the course, an MNIST run's)."""
    return backend.default_guidance_scale if guidance_scale is None else guidance_scale


def guided(backend: Backend, prompt: str, guidance_scale: float = 1.0) -> Guided:
    """The backend conditioned on `prompt`, with CFG against the null prompt "" when
    guidance_scale != 1."""
    uncond = backend.encode([""]) if guidance_scale != 1.0 else None
    return Guided(backend, backend.encode([prompt]), uncond, guidance_scale)


def forward(
    backend: Backend,
    images: dict[str, Tensor],
    *,
    generator: torch.Generator,
    ts: Sequence[int] = NOISE_TS,
) -> list[Figure]:
    """Course 1.1: each image and its noisy versions at the course timesteps `ts`."""
    steps, ab = [scaled_t(backend, t) for t in ts], backend.alphas_cumprod
    figures = []
    for name, image in images.items():
        noisy = [add_noise(image, t, ab, generator=generator) for t in steps]
        figures.append(
            Figure(
                f"forward-{name}",
                [torch.cat([image, *noisy])],
                col_labels=["original", *(time_label(backend, t) for t in steps)],
            )
        )
    return figures


def denoise(
    backend: Backend,
    images: dict[str, Tensor],
    *,
    generator: torch.Generator,
    schedule: Schedule,
    prompt: str,
    guidance_scale: float = DENOISE_CFG,
    ts: Sequence[int] = NOISE_TS,
    i_start: int = 10,
    kernel_size: int = 5,
    sigma: float = 2.0,
    sampler: str = COURSE_SAMPLER,
    callback: Callback | None = None,
) -> list[Figure]:
    """Course 1.2-1.4: Gaussian blur vs one-step vs iterative denoising, conditioned on `prompt`
    (no CFG unless guidance_scale != 1). Per image three figures: noisy / blur / one-step at
    `ts`; the iterative chain from course level `i_start`, every 5th course step (and a GIF);
    the results side by side."""
    walk = noise_sampler(sampler)
    model, ab = guided(backend, prompt, guidance_scale), backend.alphas_cumprod
    steps = [scaled_t(backend, t) for t in ts]
    start = level_index(backend, schedule, i_start)
    shown = {
        level_index(backend, schedule, i) - start
        for i in range(i_start, len(COURSE_TIMESTEPS) - 1, 5)
    }
    figures = []
    for name, image in images.items():
        noisy = torch.cat([add_noise(image, t, ab, generator=generator) for t in steps])
        one_step = torch.cat(
            [one_step_denoise(model, noisy[k : k + 1], t, ab) for k, t in enumerate(steps)]
        )
        figures.append(
            Figure(
                f"denoise-onestep-{name}",
                [noisy, blur_denoise(noisy, kernel_size, sigma), one_step],
                row_labels=["noisy", "blur", "one-step"],
                col_labels=[time_label(backend, t) for t in steps],
            )
        )

        t0 = schedule.times[start]
        x_start = add_noise(image, t0, ab, generator=generator)
        frames: list[Tensor] = []
        seen: list[tuple[int, Tensor]] = []
        keep_frame = _frames(frames, callback)

        def record(step: dict, keep_frame=keep_frame, seen=seen, frames=frames) -> None:
            keep_frame(step)
            if step["i"] in shown:
                seen.append((step["t"], frames[-1]))

        result = walk(model, x_start, schedule[start:], generator=generator, callback=record)
        figures.append(
            Figure(
                f"denoise-iterative-{name}",
                [torch.cat([x for _, x in seen])],
                col_labels=[time_label(backend, t) for t, _ in seen],
                frames=[*frames, result.cpu()],
            )
        )
        compare = [
            image,
            x_start,
            result,
            one_step_denoise(model, x_start, t0, ab),
            blur_denoise(x_start, kernel_size, sigma),
        ]
        figures.append(
            Figure(
                f"denoise-compare-{name}",
                [torch.cat(compare)],
                col_labels=[
                    "original",
                    f"noisy {time_label(backend, t0)}",
                    "iterative",
                    "one-step",
                    "blur",
                ],
            )
        )
    return figures


def _frames(frames: list[Tensor], callback: Callback | None) -> Callback:
    """A sampler callback that keeps each step's x (on the CPU) and forwards to `callback`."""

    def record(step: dict) -> None:
        frames.append(step["x"].cpu())
        if callback is not None:
            callback(step)

    return record


def sample(
    backend: Backend,
    *,
    generator: torch.Generator,
    schedule: Schedule,
    prompt: str,
    n: int = 5,
    guidance_scale: float | None = None,
    sampler: str = COURSE_SAMPLER,
    callback: Callback | None = None,
) -> list[Figure]:
    """Course 1.5-1.6: n samples from pure noise conditioned on `prompt`, without CFG and with CFG
    (scale `guidance_scale` against ""); the GIF shows the CFG chain."""
    walk = noise_sampler(sampler)
    guidance_scale = cfg_scale(backend, guidance_scale)
    frames: list[Tensor] = []
    plain = walk(
        guided(backend, prompt),
        _noise(backend, n, generator),
        schedule,
        generator=generator,
        callback=callback,
    )
    cfg = walk(
        guided(backend, prompt, guidance_scale),
        _noise(backend, n, generator),
        schedule,
        generator=generator,
        callback=_frames(frames, callback),
    )
    return [
        Figure(
            "sample",
            [plain, cfg],
            frames=[*frames, cfg.cpu()],
            row_labels=[f"{prompt!r} no CFG", f"{prompt!r} CFG {guidance_scale:g}"],
        )
    ]


def sdedit(
    backend: Backend,
    images: dict[str, Tensor],
    *,
    generator: torch.Generator,
    schedule: Schedule,
    prompt: str,
    levels: Sequence[int] = SDEDIT_LEVELS,
    guidance_scale: float | None = None,
    name: str = "sdedit",
    sampler: str = COURSE_SAMPLER,
    callback: Callback | None = None,
) -> list[Figure]:
    """Course 1.7 / 1.7.1 (and 1.7.3 img2img with another prompt): each image noised to course
    level i (index into [990, ..., 0]) and denoised with CFG; small i = big edits."""
    walk = noise_sampler(sampler)
    guidance_scale = cfg_scale(backend, guidance_scale)
    model = guided(backend, prompt, guidance_scale)
    indices = [level_index(backend, schedule, i) for i in levels]
    labels = [
        f"i={level} {time_label(backend, schedule.times[i])}"
        for level, i in zip(levels, indices, strict=False)
    ]
    figures = []
    for image_name, image in images.items():
        edits = [
            sdedit_image(
                model, image, schedule[i:], sampler=walk, generator=generator, callback=callback
            )
            for i in indices
        ]
        figures.append(
            Figure(
                f"{name}-{image_name}",
                [torch.cat([*edits, image])],
                col_labels=[*labels, "original"],
            )
        )
    return figures


def default_mask(size: int) -> Tensor:
    """The course's Campanile mask (rows 2..40, columns 24..40 of 64) at `size`: (1, 1, S, S)."""
    mask = torch.zeros(1, 1, size, size)
    r0, r1, c0, c1 = (round(v * size / 64) for v in (2, 40, 24, 40))
    mask[..., r0:r1, c0:c1] = 1.0
    return mask


def inpaint(
    backend: Backend,
    images: dict[str, Tensor],
    masks: dict[str, Tensor],
    *,
    generator: torch.Generator,
    schedule: Schedule,
    prompt: str,
    n: int = 1,
    guidance_scale: float | None = None,
    jump_length: int = 0,
    jump_n_sample: int = 1,
    callback: Callback | None = None,
) -> list[Figure]:
    """Course 1.7.2: regenerate where masks[name] (1, 1, H, W) == 1, keep the rest; n tries.
    jump_length / jump_n_sample > 1 turn on RePaint resampling (the course does not)."""
    guidance_scale = cfg_scale(backend, guidance_scale)
    model, figures = guided(backend, prompt, guidance_scale), []
    for name, image in images.items():
        mask = masks[name].to(backend.device)
        results = inpaint_image(
            model,
            image.expand(n, -1, -1, -1),
            mask,
            schedule,
            generator=generator,
            callback=callback,
            jump_length=jump_length,
            jump_n_sample=jump_n_sample,
        )
        shown = [image, (mask * 2 - 1).expand_as(image), image * (1 - mask), results]
        figures.append(
            Figure(
                f"inpaint-{name}",
                [torch.cat(shown)],
                col_labels=["original", "mask", "kept", *(f"result {k + 1}" for k in range(n))],
            )
        )
    return figures


def anagram(
    backend: Backend,
    *,
    generator: torch.Generator,
    schedule: Schedule,
    prompts: Sequence[str] = ANAGRAM_PROMPTS,
    views: Sequence[str] = ("identity", "flip"),
    n: int = 1,
    guidance_scale: float | None = None,
    sampler: str = COURSE_SAMPLER,
    callback: Callback | None = None,
) -> list[Figure]:
    """Course 1.8: an image reading as prompts[k] under views[k]; one row per view."""
    walk = noise_sampler(sampler)
    guidance_scale = cfg_scale(backend, guidance_scale)
    if len(prompts) != len(views) or len(prompts) < 2:
        raise ValueError(
            f"an anagram needs at least 2 prompts and one view each; got "
            f"{len(prompts)} prompts and {len(views)} views"
        )
    view_objects = [get_view(v) for v in views]
    model = anagram_noise(
        backend,
        [backend.encode([p]) for p in prompts],
        view_objects,
        backend.encode([""]),
        guidance_scale,
    )
    result = walk(
        model, _noise(backend, n, generator), schedule, generator=generator, callback=callback
    )
    return [
        Figure(
            "anagram",
            [v.view(result) for v in view_objects],
            row_labels=[f"{v}: {p}" for v, p in zip(views, prompts, strict=False)],
        )
    ]


def hybrid(
    backend: Backend,
    *,
    generator: torch.Generator,
    schedule: Schedule,
    far: str = HYBRID_PROMPTS[0],
    near: str = HYBRID_PROMPTS[1],
    n: int = 1,
    guidance_scale: float | None = None,
    kernel_size: int = HYBRID_KERNEL_SIZE,
    sigma: float = HYBRID_SIGMA,
    sampler: str = COURSE_SAMPLER,
    callback: Callback | None = None,
) -> list[Figure]:
    """Course 1.9: low frequencies from `far`, high from `near`; the second row mimics viewing
    from afar (4x area-downsampled)."""
    walk = noise_sampler(sampler)
    guidance_scale = cfg_scale(backend, guidance_scale)
    model = hybrid_noise(
        backend,
        backend.encode([far]),
        backend.encode([near]),
        backend.encode([""]),
        guidance_scale,
        kernel_size,
        sigma,
    )
    result = walk(
        model, _noise(backend, n, generator), schedule, generator=generator, callback=callback
    )
    small = F.interpolate(result.float(), scale_factor=0.25, mode="area")
    return [Figure("hybrid", [result, small], row_labels=[f"near: {near}", f"far: {far}"])]


def upsample(
    backend: Backend,
    *,
    generator: torch.Generator,
    schedule: Schedule,
    prompts: Sequence[str],
    guidance_scale: float | None = None,
    sampler: str = COURSE_SAMPLER,
    callback: Callback | None = None,
    **stage2: int | float,
) -> list[Figure]:
    """Course Part 0 / bells & whistles: one CFG sample per prompt, then the backend's
    super-resolution stage (IF stage 2, 64 -> 256); `stage2` kwargs go to backend.upsample."""
    walk = noise_sampler(sampler)
    guidance_scale = cfg_scale(backend, guidance_scale)
    if not backend.can_upsample:
        raise NotImplementedError(f"the {backend.name} backend has no super-resolution stage")
    low = torch.cat(
        [
            walk(
                guided(backend, p, guidance_scale),
                _noise(backend, 1, generator),
                schedule,
                generator=generator,
                callback=callback,
            )
            for p in prompts
        ]
    )
    high = backend.upsample(low, list(prompts), generator=generator, **stage2)
    return [
        Figure(
            "upsample",
            [low, high],
            row_labels=["stage 1", "stage 2"],
            col_labels=[repr(p) for p in prompts],
        )
    ]
