"""Noise schedules, timestep lists, and `Schedule`: what a sampler walks.

VP timesteps are 0-indexed ints; -1 means "the clean image". Flow times follow the course:
x_t = (1 - t) noise + t data, t from 0 (noise) to 1 (data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .table import ScheduleKind


def linear_alphas_cumprod(
    num_train_steps: int = 300, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    """Cumulative products of 1 - beta for betas linear from beta_start to beta_end: (T,)
    float32."""
    betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def alpha_bar(alphas_cumprod: Tensor, t: int | Tensor, like: Tensor) -> Tensor:
    """ab[t] on like's device, broadcastable against like (B, ...); ab[-1] = 1 (clean).

    t: an int (gives a 0-dim tensor) or a (B,) int tensor (gives shape (B, 1, ..., 1)).
    """
    ab = alphas_cumprod.to(like.device)
    if isinstance(t, Tensor) and t.ndim > 0:
        t = t.to(like.device).long()
        out = torch.where(t >= 0, ab[t.clamp(min=0)], torch.ones_like(ab[0]))
        return out.view(-1, *[1] * (like.ndim - 1))
    t = int(t)
    return ab[t] if t >= 0 else torch.ones_like(ab[0])


def strided_timesteps(start: int = 990, stride: int = 30) -> list[int]:
    """The course's strided schedule, descending to 0: [990, 960, ..., 30, 0]."""
    if start < 0 or stride <= 0:
        raise ValueError(f"need start >= 0 and stride > 0, got start={start}, stride={stride}")
    steps = list(range(start, -1, -stride))
    return steps if steps[-1] == 0 else steps + [0]


def spaced_timesteps(num_train_steps: int, num_steps: int) -> list[int]:
    """num_steps evenly spaced timesteps from T-1 down ("trailing" spacing), then -1 (clean).

    num_steps == T gives [T-1, ..., 0, -1]: the full DDPM chain (course algorithm B.2).
    """
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
    ratio = num_train_steps / num_steps
    return [round(num_train_steps - k * ratio) - 1 for k in range(num_steps)] + [-1]


def repaint_timesteps(
    timesteps: Sequence[int], jump_length: int = 0, jump_n_sample: int = 1
) -> list[int]:
    """RePaint resampling schedule over a descending list (Lugmayr et al. 2022, get_schedule_jump).

    After every jump_length denoising steps (never from the final entry) the schedule climbs back
    jump_length entries, jump_n_sample - 1 times at each such point. Rising pairs mean "re-noise
    with the forward transition q(x_t | x_t_prev)". jump_length=0 or jump_n_sample=1: unchanged.
    """
    if jump_length < 0 or jump_n_sample < 1:
        raise ValueError(
            f"need jump_length >= 0 and jump_n_sample >= 1, got {jump_length}, {jump_n_sample}"
        )
    timesteps, n = list(timesteps), len(timesteps) - 1
    if jump_length == 0 or jump_n_sample == 1:
        return timesteps
    jumps = {i: jump_n_sample - 1 for i in range(jump_length, n, jump_length)}
    out, i = [timesteps[0]], 0
    while i < n:
        i += 1
        out.append(timesteps[i])
        if jumps.get(i, 0) > 0:
            jumps[i] -= 1
            for _ in range(jump_length):
                i -= 1
                out.append(timesteps[i])
    return out


def shifted_flow_times(num_steps: int, shift: float = 1.0) -> list[float]:
    """Flow times t_k = u / (u + shift (1 - u)) of the uniform u = k / num_steps, k = 0..n.

    The SD3 / rectified-flow timestep shift (Esser et al. 2024) in the course's convention: it
    divides the signal-to-noise odds t / (1 - t) by `shift` and keeps t = 0 and t = 1 exact.
    shift > 1 spends more steps near noise (t = 0), shift < 1 near data; 1 is the uniform grid.
    diffusers' FlowMatchEulerDiscreteScheduler(shift=s) has sigma_k = 1 - t_k.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift}")
    grid = [k / num_steps for k in range(num_steps + 1)]
    return [u / (u + shift * (1 - u)) for u in grid]


@dataclass(frozen=True, eq=False)
class Schedule:
    """What a sampler walks: `times`, and for VP schedules the `alphas_cumprod` they index.

    VP: int timesteps in -1..T-1, descending to 0 or -1 (-1 = clean; a rising pair re-noises, as
    RePaint schedules do), with alphas_cumprod (T,). Flow: floats in [0, 1] rising from 0 (noise)
    to 1 (data), alphas_cumprod None. Flow map (`flow_map`): flow times that a distilled student
    jumps between, pair by pair. `schedule[a:b]` is the schedule of those entries.
    """

    times: tuple[float, ...]  # ints for VP
    alphas_cumprod: Tensor | None = None
    flow_map: bool = False

    @classmethod
    def vp(cls, alphas_cumprod: Tensor, timesteps: Sequence[int]) -> Schedule:
        """A VP schedule: int timesteps, each in -1..T-1 for alphas_cumprod (T,)."""
        times = tuple(int(t) for t in timesteps)
        bad = [t for t in times if not -1 <= t < len(alphas_cumprod)]
        if bad:
            raise ValueError(
                f"timesteps {bad} are outside -1..{len(alphas_cumprod) - 1} of a "
                f"{len(alphas_cumprod)}-step noise schedule"
            )
        return cls(times, alphas_cumprod)

    @classmethod
    def flow(cls, num_steps: int, shift: float = 1.0) -> Schedule:
        """The flow grid of `num_steps` steps: the course's uniform t_k = k / num_steps, or with
        `shift` != 1 the shifted grid of `shifted_flow_times`."""
        return cls(tuple(shifted_flow_times(num_steps, shift)))

    @classmethod
    def flowmap(cls, times: Sequence[float]) -> Schedule:
        """The times a flow-map student jumps between: floats in [0, 1], strictly rising (a
        student of a DDPM starts at its schedule's first flow time, above 0)."""
        times = tuple(float(t) for t in times)
        if any(not 0.0 <= t <= 1.0 for t in times) or any(
            b <= a for a, b in zip(times, times[1:], strict=False)
        ):
            raise ValueError(f"flow-map times must rise strictly within [0, 1], got {list(times)}")
        return cls(times, flow_map=True)

    @property
    def kind(self) -> ScheduleKind:
        if self.flow_map:
            return "flowmap"
        return "flow" if self.alphas_cumprod is None else "vp"

    @property
    def is_flow(self) -> bool:
        return self.alphas_cumprod is None

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, index: slice) -> Schedule:
        if not isinstance(index, slice):
            raise TypeError(
                "index a Schedule with a slice (schedule[i_start:]); use .times[i] for one entry"
            )
        return replace(self, times=self.times[index])
