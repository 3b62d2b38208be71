"""Few-step students: a guidance-conditioned flow map regressed on its teacher's ODE trajectories.

`distill(teacher_run, ...)` trains a student run (docs/distillation.md) with the lab's Trainer:

1. Teacher data (`teacher_trajectories`): seeded noises, each with a random label and guidance
   scale w, integrated along the teacher's guided probability-flow ODE with the samplers' table
   (DPM-Solver++(2M), one call a grid interval; a DDPM's states mapped to flow coordinates) and
   kept, with the guided velocity, at the K + 1 times of a grid.
2. The student u(x_t, t, s, c, w) (training.flowmap) starts as the teacher: its UNet with
   BatchNorm folded and zero-initialised extra conditioning inputs (UNet.widened).
3. The loss (`FlowMapObjective`): pairs i <= j of one trajectory, a random segment of a uniform
   N-step subgrid (N from the levels) or, with p_diag, a diagonal pair; the target is
   (x_j - x_i) / (t_j - t_i) (s = t: the guided velocity); the error is weighted as a data-space
   end-point error, max(s - t, 1/K)^2 K^2 / 4, and by default taken through a pseudo-Huber
   function (Song & Dhariwal, "Improved Techniques for Training Consistency Models").

A student samples with the table's flowmap sampler: N jumps, one model call each at any w.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import samplers

from .checkpoints import find_checkpoint
from .config import (
    STUDENT_DEFAULTS,
    ConfigError,
    DistillOptions,
    TrainOptions,
    TrainPlan,
    validate,
)
from .data import derive_seed
from .flowmap import average_velocity, flow_time_of_alpha_bar, vp_scale
from .models import STUDENT_TIME_EXTRA, UNet
from .objectives import Objective
from .pretrained import LabModel, load_lab_model
from .runs import load_run_config
from .trainer import Trainer, memory_format, train

TEACHER_BATCH = 256  # trajectories integrated at once


# ----------------------------------------------------------------------------- the teacher
def load_teacher(
    run_dir: str | Path, checkpoint: str | None = None, device: str | torch.device = "cpu"
) -> tuple[LabModel, str]:
    """(the teacher's model, the sha256 of its sampling weights); ConfigError for a run that
    cannot teach: not class-conditional, not a course-UNet diffusion model, or a student."""
    cfg = load_run_config(run_dir).options  # FileNotFoundError: no run there
    if cfg.is_student:
        raise ConfigError(
            f"{run_dir} is itself a distilled student; distill from its teacher "
            f"({cfg.distill.teacher if cfg.distill else ''})"
        )
    if not can_teach(cfg):
        raise ConfigError(
            f"{run_dir}: a teacher is a class-conditional course-UNet flow or DDPM run "
            f"(flow-class, ddpm-class); this is {cfg.experiment} with arch {cfg.arch}"
        )
    lab = load_lab_model(run_dir, checkpoint, device)
    assert lab.checkpoint is not None
    ckpt = find_checkpoint(run_dir, lab.checkpoint.name)
    sha = (ckpt.meta.get("sha256") or {}).get(ckpt.weights_file.name)
    if not sha:
        raise ConfigError(f"{ckpt.path / 'meta.json'}: no sha256 of {ckpt.weights_file.name}")
    return lab, sha


def teacher_schedule(lab: LabModel, d: DistillOptions) -> samplers.Schedule:
    """What d.teacher_sampler walks: d.grid intervals of d.substeps steps each, on the uniform
    flow grid or on spaced VP timesteps."""
    n = d.grid * d.substeps
    if lab.kind == "flow":
        return samplers.Schedule.flow(n)
    return samplers.Schedule.vp(
        lab.alphas_cumprod, samplers.spaced_timesteps(lab.config.num_timesteps, n)
    )


def grid_times(lab: LabModel, d: DistillOptions) -> tuple[float, ...]:
    """The grid's d.grid + 1 flow times, rising to 1 (a DDPM's start above 0: its T-step
    schedule never reaches pure noise)."""
    schedule = teacher_schedule(lab, d)
    if schedule.is_flow:
        return tuple(float(t) for t in schedule.times[:: d.substeps])
    ab = lab.alphas_cumprod.double().cpu()
    return tuple(
        1.0 if i < 0 else float(flow_time_of_alpha_bar(ab[i]))
        for i in schedule.times[:: d.substeps]
    )


class RowGuided:
    """model(x, t, cond) -> the sampler's model(x, t), guided with a scale per row: one batched
    call holds every row and, for the rows that need one (a class and w != 1), its
    unconditional twin. `last` keeps the latest output."""

    def __init__(self, model, cond: Tensor, w: Tensor):
        self.model, self.cond, self.w = model, cond, w.view(-1, 1, 1, 1)
        self.pair = (cond.sum(1) > 0) & (w != 1)
        self.last: Tensor | None = None

    def __call__(self, x: Tensor, t: int | Tensor) -> Tensor:
        b, pair = x.shape[0], self.pair
        tt = torch.cat([t, t[pair]]) if isinstance(t, Tensor) and t.ndim else t
        cond = torch.cat([self.cond, torch.zeros_like(self.cond[pair])])
        out = self.model(torch.cat([x, x[pair]]), tt, cond)
        guided = out[:b].clone()
        guided[pair] = out[b:] + self.w[pair] * (guided[pair] - out[b:])
        self.last = guided
        return guided


@dataclass
class TeacherData:
    """Trajectories: states (N, K + 1, 1, 28, 28) at the grid's times and guided velocities
    (N, K, 1, 28, 28) at states 0..K-1 (float16, flow coordinates), labels (N,) in -1..9 and
    guidance scales w (N,)."""

    states: Tensor
    velocities: Tensor
    labels: Tensor
    w: Tensor


def _trajectory(
    lab: LabModel, d: DistillOptions, model: RowGuided, noise: Tensor
) -> tuple[Tensor, Tensor]:
    """(states (B, K + 1, ...), velocities (B, K, ...)) of one batch of noises, in float16 on the
    CPU: the teacher's sampler walks its schedule, and every substeps-th step keeps its state and
    the guided output there (a DDPM's mapped to flow coordinates)."""
    schedule = teacher_schedule(lab, d)
    states: list[Tensor] = []
    velocities: list[Tensor] = []

    def keep(step: samplers.Step) -> None:
        if step["i"] % d.substeps:
            return
        tau = d.times[step["i"] // d.substeps]
        x, out = step["x"], model.last
        assert out is not None
        if lab.kind == "ddpm":  # a VP state and its noise -> flow state and velocity
            x = x / vp_scale(torch.tensor(tau)).item()
            out = (x - out) / tau
        states.append(x.half().cpu())
        velocities.append(out.half().cpu())

    sample = samplers.get_sampler(d.teacher_sampler)
    end = sample(model, noise.to(lab.device), schedule, callback=keep)
    states.append(end.half().cpu())  # at flow time 1 a VP state is the image too
    return torch.stack(states, 1), torch.stack(velocities, 1)


@torch.no_grad()
def teacher_trajectories(lab: LabModel, d: DistillOptions, seed: int) -> TeacherData:
    """d.trajectories trajectories of the teacher's guided ODE, every draw from a generator
    seeded with (seed, "distill-data")."""
    g = torch.Generator().manual_seed(derive_seed(seed, "distill-data"))
    base = lab.velocity_model if lab.kind == "flow" else lab.eps_model
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    bar = tqdm(total=d.trajectories, desc="teacher data", unit="traj", dynamic_ncols=True)
    for start in range(0, d.trajectories, TEACHER_BATCH):
        b = min(TEACHER_BATCH, d.trajectories - start)
        noise = torch.randn(b, 1, 28, 28, generator=g)
        labels = torch.randint(0, lab.config.num_classes, (b,), generator=g)
        labels[torch.rand(b, generator=g) < d.p_null] = -1
        w = d.w_min + (d.w_max - d.w_min) * torch.rand(b, generator=g)
        w[torch.rand(b, generator=g) < d.p_w1] = 1.0
        model = RowGuided(base, lab.one_hot(labels), w.to(lab.device))
        parts.append((*_trajectory(lab, d, model, noise), labels, w))
        bar.update(b)
    bar.close()
    s, v, labels, w = (torch.cat(p) for p in zip(*parts, strict=True))
    return TeacherData(s, v, labels, w)


# ----------------------------------------------------------------------------- the loss
def sample_pairs(
    n: int, grid: int, levels: tuple[int, ...], p_diag: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(i, j) (n,) grid indices, i <= j: a random segment of the uniform N-step subgrid, N drawn
    uniformly from `levels` (each divides `grid`); with p_diag instead a diagonal pair (i, i),
    i < grid."""
    g, device = generator, generator.device
    level = torch.tensor(levels, device=device)[
        torch.randint(0, len(levels), (n,), generator=g, device=device)
    ]
    segment = (torch.rand(n, generator=g, device=device) * level).long()
    i, j = segment * (grid // level), (segment + 1) * (grid // level)
    diagonal = torch.rand(n, generator=g, device=device) < p_diag
    k = torch.randint(0, grid, (n,), generator=g, device=device)
    return torch.where(diagonal, k, i), torch.where(diagonal, k, j)


# the pseudo-Huber loss's c, an end-point RMS error in [-1, 1] pixels: Song & Dhariwal's
# c = 0.00054 sqrt(d) for the L2 norm over d pixels
PSEUDO_HUBER_C = 0.00054


class FlowMapObjective:
    """objective(model, idx, c, generator) -> (losses (B,), t (B,)): the flow-map regression on
    trajectories `idx` (B,) of `data` (c unused: the labels are the data's, made one-hot by
    `one_hot`), pairs from sample_pairs, the target the chord (x_j - x_i) / (t_j - t_i) or, on
    the diagonal, the teacher's guided velocity. The mean squared error weighted
    max(s - t, 1/K)^2 K^2 / 4 is the jump's end-point error in data space (a whole-grid jump
    weighs K^2 / 4, a one-interval 1/4): the loss with `loss="squared"`; "pseudo_huber" takes
    e to sqrt(e + h^2) - h, h = c K / 2 for an end-point RMS error of c = PSEUDO_HUBER_C (about
    the RMS error itself, times K / 2, where it exceeds c)."""

    def __init__(
        self,
        data: TeacherData,
        d: DistillOptions,
        options: TrainOptions,
        alphas_cumprod: Tensor | None,
        one_hot: Callable[[Tensor], Tensor],
    ):
        self.data, self.d, self.options, self.one_hot = data, d, options, one_hot
        self.times = torch.tensor(d.times, dtype=torch.float32, device=data.states.device)
        self.alphas_cumprod = alphas_cumprod if options.kind == "ddpm" else None

    def __call__(
        self, model: nn.Module, idx: Tensor, c: Tensor | None, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        data, k = self.data, self.d.grid
        i, j = sample_pairs(idx.shape[0], k, self.d.levels, self.d.p_diag, generator)
        idx = idx.to(data.states.device)
        x_i, x_j = (data.states[idx, n].float() for n in (i, j))
        velocity = data.velocities[idx, i.clamp(max=k - 1)].float()
        t, s = self.times[i], self.times[j]
        gap = (s - t).view(-1, 1, 1, 1)
        target = torch.where(gap > 0, (x_j - x_i) / gap.clamp(min=1e-8), velocity)
        cond = self.one_hot(data.labels[idx])
        x_i = x_i.contiguous(memory_format=memory_format(self.options))
        u = average_velocity(model, x_i, t, s, cond, data.w[idx], self.alphas_cumprod)
        err = (u.float() - target).square().flatten(1).mean(1)
        err = err * gap.flatten().clamp(min=1 / k) ** 2 * (k**2 / 4)
        if self.d.loss == "pseudo_huber":
            h = PSEUDO_HUBER_C * k / 2
            err = torch.sqrt(err + h * h) - h
        return err, t


class TrajectoryBatches:
    """Batch `step`: (B,) trajectory indices drawn with replacement from a generator seeded with
    (seed, "distill-batch", step), this rank's share of them, and None for the labels."""

    def __init__(self, count: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.count, self.batch_size, self.seed = count, batch_size, seed
        self.rank, self.world = rank, world
        self.steps_per_pass = math.ceil(count / batch_size)

    def batch(self, step: int) -> tuple[Tensor, None]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "distill-batch", step))
        return torch.randint(0, self.count, (self.batch_size,), generator=g)[
            self.rank :: self.world
        ], None


# ----------------------------------------------------------------------------- the trainer
class DistillTrainer(Trainer):
    """The lab's Trainer on a student's options: the teacher's trajectories for data, its
    widened UNet for the model, FlowMapObjective for the loss. Resuming regenerates the seeded
    teacher data (the same on the same machine) and continues exactly."""

    def _training_data(
        self, options: TrainOptions, stored: TrainPlan | None
    ) -> tuple[Any, str, int]:
        d = options.distill
        assert d is not None
        self.teacher, sha = load_teacher(d.teacher, d.teacher_checkpoint, self.device)
        if sha != d.teacher_sha256:
            raise ConfigError(
                f"teacher {d.teacher} ({d.teacher_checkpoint}) is not the one this student was "
                "distilled from: its weights changed (sha256 differs)"
            )
        data = teacher_trajectories(self.teacher, d, options.seed)
        self.teacher_data = TeacherData(*(v.to(self.device) for v in vars(data).values()))
        batches = TrajectoryBatches(
            d.trajectories, options.batch_size, options.seed, self.rank, self.world
        )
        return batches, self.teacher.dataset, d.trajectories

    def _initial_model(self, options: TrainOptions) -> nn.Module:
        unet = self.teacher.unet
        assert isinstance(unet, UNet)
        return unet.widened(STUDENT_TIME_EXTRA, options.num_classes).float().train()

    def _make_objective(self, options: TrainOptions, alphas_cumprod: Tensor | None) -> Objective:
        assert options.distill is not None
        return FlowMapObjective(
            self.teacher_data, options.distill, options, alphas_cumprod, self.teacher.one_hot
        )

    def _batch(self, step: int) -> tuple[Tensor, None]:
        idx, _ = self.batches.batch(step)
        return idx, None


def student_options(
    teacher_run: str | Path,
    *,
    method: str = "flowmap",
    steps: int | None = None,
    name: str | None = None,
    sample_steps: int | None = None,
    trajectories: int | None = None,
    seed: int = 0,
    device: str = "auto",
    wandb_mode: str | None = None,
    **training: Any,
) -> TrainOptions:
    """The options of a new student of `teacher_run` (STUDENT_DEFAULTS over the teacher's model
    options; `training`: more TrainOptions fields, e.g. log_every in tests). ConfigError for a
    teacher that cannot teach, FileNotFoundError for none there."""
    if method != "flowmap":
        raise ConfigError(f"--method {method!r} is not one of flowmap")
    lab, sha = load_teacher(teacher_run)
    distill = DistillOptions(
        teacher=str(teacher_run),
        teacher_checkpoint=lab.checkpoint.name if lab.checkpoint else "",
        teacher_sha256=sha,
        times=(),
        loss="pseudo_huber",
    )
    if trajectories is not None:
        distill = replace(distill, trajectories=trajectories)
    distill = replace(distill, times=grid_times(lab, distill))
    given = dict(steps=steps, sample_steps=sample_steps, **training)
    teacher = lab.config
    options = replace(
        teacher,
        **{**STUDENT_DEFAULTS, **{k: v for k, v in given.items() if v is not None}},
        name=name or f"{teacher.name}-student",
        dataset=lab.dataset,
        seed=seed,
        device=device,
        mixed_precision="auto",
        wandb_mode=wandb_mode,
        distill=distill,
    )
    return validate(options)


def can_teach(options: TrainOptions) -> bool:
    """Whether a run of `options` can be distilled (load_teacher says why not)."""
    return (
        options.kind in ("flow", "ddpm")
        and options.class_conditional
        and options.arch == "course"
        and not options.is_student
    )


def distill(
    options: TrainOptions,
    runs_dir: str | Path = "runs",
    *,
    resume: bool = False,
    stop_after: int | None = None,
) -> Path:
    """Train the student of `options` (student_options) into runs_dir/options.name, or continue
    it (`resume`); returns the run folder. `stop_after`: stop after that many epochs (tests)."""
    if options.distill is None:
        raise ConfigError(f"run {options.name!r} is not a distillation (no 'distill' options)")
    return train(options, runs_dir, resume=resume, stop_after=stop_after)  # picks DistillTrainer
