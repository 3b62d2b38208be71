"""A trained lab model ready to sample: `load_lab_model(run_dir)` -> `LabModel`.

Conventions: DDPM timestep i in 0..T-1 reaches the UNet as (i + 1) / T (training.objectives
writes the same mapping); flow time t in [0, 1] follows the course (x_t = (1-t) noise + t data,
the UNet predicts data - noise). Class conditioning is a one-hot (B, 10); label -1 (and the
all-zero row) is the null class. Samples are (B, 1, 28, 28) in [-1, 1] (background -1). All
sampling goes through the samplers' table (samplers.SAMPLERS); the UNet runs in the precision
the machine runs fastest (`--mixed-precision auto`:
samplers.app.devices.resolve_mixed_precision), the
samplers' arithmetic in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import samplers
from samplers.app.devices import autocast, resolve_device, resolve_mixed_precision

from .checkpoints import CheckpointError, find_checkpoint, load_weights, verify_checksums
from .config import TrainOptions, TrainPlan, check_sampler, walks_flow
from .flowmap import average_velocity, student_times, vp_scale
from .models import build_model, fold_batchnorm
from .runs import load_run_config
from .untrusted import entry_kind

# The most images one UNet call takes on a CPU, by the precision the UNet runs in. In fp32, past
# it throughput falls (1,000 images a call ran at 0.36x the speed of 128, docs/performance.md); at
# 64 a D=64 UNet's largest activation (25 MB) stays under the 32 MiB that glibc's malloc can keep
# for reuse (samplers.app.tuning.keep_freed_memory). Under bf16 autocast larger calls run faster,
# up
# to 256 (on a Zen 4, 1.18x the images/s of 64 at D=32, 1.07x at D=64; 512 slower); fp16, whose
# activations are as small, takes the same (not measured: `auto` never picks fp16 on a CPU).
CPU_MAX_BATCH = {"no": 64, "bf16": 256, "fp16": 256}


def max_batch(device: torch.device | str, precision: str) -> int | None:
    """LabModel.max_batch for `device` and `precision` ("no", "bf16", "fp16"): CPU_MAX_BATCH on a
    CPU, None (one call) elsewhere."""
    return CPU_MAX_BATCH[precision] if torch.device(device).type == "cpu" else None


def vp_alphas_cumprod(cfg: TrainOptions) -> Tensor | None:
    """alphas_cumprod (T,) of a DDPM run; flow runs get the same VP schedule (for VelocityAsEps)."""
    if cfg.kind not in ("ddpm", "flow"):
        return None
    return samplers.linear_alphas_cumprod(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)


def unet_time(i: Tensor, num_timesteps: int) -> Tensor:
    """DDPM timestep(s) i in 0..T-1 -> the UNet's time input (i + 1) / T in (0, 1]."""
    return (i.float() + 1) / num_timesteps


def build_unet(cfg: TrainOptions) -> nn.Module:
    """The UNet of a run of `cfg`: a distilled student's widened, BatchNorm-free one for a
    student (training.flowmap)."""
    return build_model(
        cfg.arch,
        hidden=cfg.hidden,
        conditioning=cfg.conditioning,
        num_classes=cfg.num_classes,
        student=cfg.is_student,
    )


def meta_state_dict(cfg: TrainOptions) -> dict[str, Tensor]:
    """The state dict cfg's UNet has, on the meta device: its names and shapes, nothing
    allocated (a config edited to a huge width costs nothing here)."""
    with torch.device("meta"):
        return build_unet(cfg).state_dict()


def weights_fit(cfg: TrainOptions, path: Path) -> bool:
    """Whether the safetensors file `path` (a regular file) holds exactly the tensors of cfg's
    UNet, by name and shape; read from its header only."""
    from safetensors import SafetensorError, safe_open

    if entry_kind(path.parent, path.name) != "file":
        return False
    expected = {k: tuple(v.shape) for k, v in meta_state_dict(cfg).items()}
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False
    return found == expected


@dataclass
class LabModel:
    """A lab UNet with its run's options (and plan, for a model of a run); `unet` is used as is
    (load_lab_model puts it in eval mode).

    `precision`: "no" (fp32), "bf16" or "fp16": the autocast the UNet's forward runs under.
    `max_batch`: the most images one UNet call takes; a larger batch runs as equal chunks
    (None: all at once). Outputs do not depend on it beyond float rounding.
    """

    config: TrainOptions
    unet: nn.Module
    alphas_cumprod: Tensor | None  # (T,) float32 on the model's device (None for denoisers)
    checkpoint: Path | None = None
    precision: str = "no"
    max_batch: int | None = None
    plan: TrainPlan | None = None  # what its run resolved at the start (None: no run)

    @property
    def dataset(self) -> str:
        """The dataset it was trained on: its plan's (the options' own without a plan)."""
        return self.plan.dataset if self.plan is not None else self.config.dataset

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def class_conditional(self) -> bool:
        return self.config.class_conditional

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def one_hot(self, labels: Sequence[int] | Tensor) -> Tensor:
        """(B,) ints in [-1, K) -> (B, K) float one-hot; -1 gives the zero row (null class)."""
        labels = torch.as_tensor(labels, device=self.device).long().reshape(-1)
        k = self.config.num_classes
        if labels.numel() and (labels.min() < -1 or labels.max() >= k):
            raise ValueError(f"labels must be in [-1, {k - 1}], got {labels.tolist()}")
        return torch.nn.functional.one_hot(labels.clamp(min=0), k).float() * (labels >= 0)[:, None]

    def grid_labels(self, per_class: int) -> Tensor:
        """Labels of a per_class x K grid, a row per repeat (0..K-1, 0..K-1, ...); a time-only or
        single-step model gets K * per_class unconditional labels (-1)."""
        k = self.config.num_classes
        if not self.class_conditional:
            return torch.full((k * per_class,), -1)
        return torch.arange(k).repeat(per_class)

    def network(
        self,
        x: Tensor,
        t: Tensor | None = None,
        cond: Tensor | None = None,
        extra_t: Tensor | None = None,
        extra_c: Tensor | None = None,
    ) -> Tensor:
        """The UNet on x (B, C, H, W) at t (B,) with cond (B, K) or None (and a student's extra
        inputs, training.flowmap; None: zeros), under the model's autocast, in chunks of at most
        `max_batch` images; output (B, C, H, W) in x's dtype."""
        args = (x, t, cond, extra_t, extra_c)
        n = 1 if self.max_batch is None else -(-x.shape[0] // self.max_batch)
        if n > 1:
            parts = zip(
                *(v.tensor_split(n) if v is not None else [None] * n for v in args),
                strict=False,
            )
            return torch.cat([self.network(*part) for part in parts])
        with autocast(x.device, self.precision):
            if t is None:
                out = self.unet(x)
            elif extra_t is None and extra_c is None:
                out = self.unet(x, t, cond)
            else:
                out = self.unet(x, t, cond, extra_t, extra_c)
        return out.to(x.dtype)

    def student_model(
        self, x: Tensor, t: Tensor, s: Tensor, cond: Tensor | None, guidance_scale: Tensor
    ) -> Tensor:
        """A student's average velocity from flow time t to s (training.flowmap); cond None:
        the null class."""
        if cond is None:
            cond = x.new_zeros(x.shape[0], self.config.num_classes)
        ab = self.alphas_cumprod if self.kind == "ddpm" else None
        return average_velocity(self.network, x, t, s, cond, guidance_scale, ab)

    def eps_model(self, x: Tensor, t: int | Tensor, cond: Tensor | None = None) -> Tensor:
        """DDPM noise prediction; t an int timestep or (B,) ints in 0..T-1."""
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        return self.network(x, unet_time(t, self.config.num_timesteps).to(x.dtype), cond)

    def velocity_model(self, x: Tensor, t: float | Tensor, cond: Tensor | None = None) -> Tensor:
        """Flow velocity data - noise at time t (float or (B,) in [0, 1])."""
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype).expand(x.shape[0])
        return self.network(x, t, cond)

    def schedule(self, sampler: str, steps: int) -> samplers.Schedule:
        """What `sampler` walks in `steps` steps: the flow grid, `steps` spaced VP timesteps, or
        (flowmap) steps + 1 times of a student's grid."""
        if sampler == "flowmap":
            if self.config.distill is None:
                raise ValueError("the flowmap sampler needs a distilled student")
            return samplers.Schedule.flowmap(student_times(self.config.distill.times, steps))
        if walks_flow(self.kind, sampler):
            return samplers.Schedule.flow(steps)
        return samplers.Schedule.vp(
            self.alphas_cumprod, samplers.spaced_timesteps(self.config.num_timesteps, steps)
        )

    def sampling_model(self, sampler: str, labels: Tensor, guidance_scale: float) -> Callable:
        """model(x, t) for `sampler`, conditioned on `labels` with CFG at `guidance_scale` (a
        student's model(x, t, s) for flowmap, the scale one of its inputs)."""
        if sampler == "flowmap":
            return samplers.GuidedStudent(self.student_model, self.one_hot(labels), guidance_scale)
        base = self.eps_model
        if walks_flow(self.kind, sampler):
            base = self.velocity_model
        elif self.kind == "flow":
            base = samplers.VelocityAsEps(self.velocity_model, self.alphas_cumprod)
        if not self.class_conditional:
            return samplers.Guided(base)
        uncond = torch.zeros(1, self.config.num_classes, device=self.device)
        return samplers.Guided(base, self.one_hot(labels), uncond, guidance_scale)

    @torch.no_grad()
    def sample(
        self,
        labels: Sequence[int] | Tensor,
        *,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        callback: Callable | None = None,
        batch_size: int | None = None,
    ) -> Tensor:
        """Generate (B, 1, 28, 28) in [-1, 1], one image per label (-1 = unconditional; a
        time-only model takes only -1, see grid_labels). CFG (default: the run's scale) runs
        batched. Noise is drawn on the generator's device (the CPU without one) and moved.

        batch_size: sample in chunks of that many labels, one after the other from the same
        generator. The images depend on it: the same seed and batch size give the same images.
        """
        labels = torch.as_tensor(labels).long().reshape(-1)
        if batch_size is not None and labels.numel() > batch_size:
            return torch.cat(
                [
                    self.sample(
                        part,
                        guidance_scale=guidance_scale,
                        sampler=sampler,
                        steps=steps,
                        generator=generator,
                        callback=callback,
                    )
                    for part in labels.split(batch_size)
                ]
            )
        cfg = self.config
        sampler, steps = sampler or cfg.sampler, steps or cfg.sample_steps
        check_sampler(cfg, sampler, steps)
        if not self.class_conditional and (labels != -1).any():
            raise ValueError(
                f"a {cfg.experiment} model is not class-conditional: it draws "
                f"unconditional samples only (label -1), got {labels.tolist()}"
            )
        noise_device = generator.device if generator is not None else "cpu"
        x = torch.randn((labels.numel(), 1, 28, 28), generator=generator, device=noise_device).to(
            self.device
        )
        if sampler == "direct":
            return (2 * self.network(x) - 1).clamp(-1, 1)
        scale = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        model = self.sampling_model(sampler, labels, scale)
        schedule = self.schedule(sampler, steps)
        if sampler == "flowmap":  # the flow state at the grid's first time (a DDPM's: above 0)
            x = x / vp_scale(torch.tensor(schedule.times[0])).item()
        out = samplers.get_sampler(sampler)(
            model, x, schedule, generator=generator, callback=callback
        )
        return out.clamp(-1, 1)


def load_lab_model(
    run_dir: str | Path,
    checkpoint: int | str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> LabModel:
    """Load a run's model (EMA weights when the run kept them) in eval mode on `device`, to run
    in `precision` ("auto": samplers.app.devices.resolve_mixed_precision), with its BatchNorm folded
    into the convolutions (models.fold_batchnorm).

    Raises FileNotFoundError for a missing run, CheckpointError for a missing, corrupt or
    mismatched checkpoint (the message names the file), DeviceUnavailable for a device this
    machine lacks.
    """
    run_dir, device = Path(run_dir), resolve_device(device)
    run = load_run_config(run_dir)
    cfg = run.options
    ckpt = find_checkpoint(run_dir, checkpoint)
    ckpt.check_experiment(cfg.experiment)
    if entry_kind(ckpt.path, ckpt.weights_file.name) not in ("file", None):
        raise CheckpointError(
            f"{ckpt.weights_file}: not a regular file (symlinks are not followed)"
        )
    expected = meta_state_dict(cfg)  # checked before the model is built: a huge width fails
    try:
        weights = load_weights(
            ckpt.weights_file, device, experiment=cfg.experiment, expected=expected
        )
    except CheckpointError as e:
        if "does not fit" not in str(e):
            raise
        raise CheckpointError(
            f"{e} (run: arch={cfg.arch}, hidden={cfg.hidden}, conditioning={cfg.conditioning})"
        ) from e
    verify_checksums(ckpt, (ckpt.weights_file.name,))
    unet = build_unet(cfg).to(device)
    unet.load_state_dict(weights, strict=True)
    # inference layout: BatchNorm folded into the convolutions, channels-last (see `make bench`)
    unet = fold_batchnorm(unet).to(memory_format=torch.channels_last)
    ab = vp_alphas_cumprod(cfg)
    precision = resolve_mixed_precision(precision, device)
    return LabModel(
        cfg,
        unet.eval(),
        None if ab is None else ab.to(device),
        ckpt.path,
        precision,
        max_batch(device, precision),
        run.plan,
    )
