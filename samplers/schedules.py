"""Noise schedules and timestep lists. Timesteps are 0-indexed ints; -1 means "the clean image"."""

import torch


def linear_alphas_cumprod(num_train_steps=300, beta_start=1e-4, beta_end=0.02):
    """Cumulative products of 1 - beta for betas linear from beta_start to beta_end: (T,)
    float32."""
    betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


def alpha_bar(alphas_cumprod, t, like):
    """ab[t] on like's device, broadcastable against like (B, ...); ab[-1] = 1 (clean).

    t: an int (gives a 0-dim tensor) or a (B,) int tensor (gives shape (B, 1, ..., 1)).
    """
    ab = alphas_cumprod.to(like.device)
    if isinstance(t, torch.Tensor) and t.ndim > 0:
        t = t.to(like.device).long()
        out = torch.where(t >= 0, ab[t.clamp(min=0)], torch.ones_like(ab[0]))
        return out.view(-1, *[1] * (like.ndim - 1))
    t = int(t)
    return ab[t] if t >= 0 else torch.ones_like(ab[0])


def strided_timesteps(start=990, stride=30):
    """The course's strided schedule, descending to 0: [990, 960, ..., 30, 0]."""
    if start < 0 or stride <= 0:
        raise ValueError(f"need start >= 0 and stride > 0, got start={start}, stride={stride}")
    steps = list(range(start, -1, -stride))
    return steps if steps[-1] == 0 else steps + [0]


def spaced_timesteps(num_train_steps, num_steps):
    """num_steps evenly spaced timesteps from T-1 down ("trailing" spacing), then -1 (clean).

    num_steps == T gives [T-1, ..., 0, -1]: the full DDPM chain (course algorithm B.2).
    """
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"num_steps must be in [1, {num_train_steps}], got {num_steps}")
    ratio = num_train_steps / num_steps
    return [round(num_train_steps - k * ratio) - 1 for k in range(num_steps)] + [-1]


def repaint_timesteps(timesteps, jump_length=0, jump_n_sample=1):
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
