"""Learning-rate schedules of a run: the course's ExponentialLR, or per-step warm-up + cosine.

`make_scheduler(optimizer, options, plan)` returns the scheduler and whether it steps every
optimizer step (True) or once an epoch (the course's ExponentialLR, False). Both are torch
schedulers, so their state dicts go into checkpoints and a resume continues them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import TrainOptions, TrainPlan


@dataclass(frozen=True)
class WarmupCosine:
    """LR factor at step s: linear warm-up (s+1)/warmup, then cosine from 1 to `final_ratio`
    at `total` steps; constant 1 after the warm-up when `decay` is False."""

    total: int
    warmup: int = 0
    final_ratio: float = 0.1
    decay: bool = True

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.decay:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, options: TrainOptions, plan: TrainPlan
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """(scheduler, per_step) for a run of `options` (the schedule) planned as `plan` (its
    lr_gamma and lr_decay_steps)."""
    if options.lr_schedule == "exponential" and options.warmup_steps == 0:
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=plan.lr_gamma), False
    decay = options.scheduler and options.lr_schedule == "cosine"
    factor = WarmupCosine(plan.lr_decay_steps, options.warmup_steps, options.lr_final_ratio, decay)
    # through a plain function: LambdaLR checkpoints (and restores) the fields of a callable
    # object, and the schedule's shape is the plan's (lr_decay_steps), not a checkpoint's
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step)), True
