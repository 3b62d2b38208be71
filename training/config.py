"""Typed run configuration and the registry of course experiments (docs/course.md 3.5-3.9).

One flat dataclass, `TrainConfig`, holds everything a run needs; `EXPERIMENTS` maps each experiment
name to its course defaults, and `make_config` applies a user's overrides. `config.json` in a run
directory is `asdict(TrainConfig)`, so `TrainConfig.from_dict` reads it back.

Length (docs/course.md 3.8): training is counted in optimizer steps. An *epoch* (the course's
epoch; `period_steps` steps, the field's name kept in config.json) is ceil(60000 / batch_size)
steps when the course length is scaled to a smaller dataset (mnist-5k), else one pass over the
dataset (full MNIST, or an explicit ``--epochs N``).
`resolve_length` turns (epochs, steps, dataset size) into (period_steps, total_steps).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from samplers.app.devices import DEVICES, PRECISIONS
from samplers.sampling import FLOW_SAMPLERS
from samplers.sampling import SAMPLERS as SAMPLER_TABLE

from .data import DATASETS
from .models import ARCHS, check_width

Kind = Literal["denoiser", "pure-noise", "ddpm", "flow"]
COURSE_TRAIN_SIZE = 60_000  # MNIST train split: the course's epochs are passes over it
COURSE_LR_DECAY = 0.1  # the course's ExponentialLR: the rate falls x0.1 over the run
NO_SCHEDULER_EMA_DECAY = 0.999
NO_SCHEDULER_HELP = (
    "constant learning rate instead of the schedule. Compensation: the constant rate is the "
    "geometric middle of the range the schedule spans, lr0 * sqrt(last rate / lr0): lr0 * 10**-0.5 "
    "for the course's ExponentialLR (lr0 -> lr0/10), lr0 * sqrt(lr_final_ratio) for the cosine of "
    "--recipe fast; an explicit --lr is used as given. Samples use an exponential moving average "
    f"of the weights (decay capped at {NO_SCHEDULER_EMA_DECAY}; see --ema-warmup), which does the "
    "smoothing the decaying rate did."
)


class ConfigError(ValueError):
    """A user-caused configuration problem; the CLI prints it as one line and exits with 2."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; nothing non-finite was saved (CLI: exit
    1)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Images: denoisers in [0, 1], DDPM/flow in [-1, 1]."""

    experiment: str
    kind: Kind
    conditioning: str  # "none" | "time-add" | "time-mul" | "class" (training.models)
    # model
    arch: str = "course"  # "course" | "improved"
    hidden: int = 64  # the course's D
    num_classes: int = 10
    # optimization
    batch_size: int = 128  # global batch (split over processes)
    lr: float = 1e-3
    scheduler: bool = True  # False: constant learning rate (after any warm-up)
    lr_schedule: str = "exponential"  # "exponential": ExponentialLR(0.1 ** (1 / epochs)) an epoch;
    #                                  "cosine": per-step cosine from lr to lr * lr_final_ratio
    lr_final_ratio: float = 0.1  # "cosine": the last step's rate as a fraction of lr
    warmup_steps: int = (
        0  # linear learning-rate warm-up from lr / warmup_steps (per-step schedules)
    )
    ema_decay: float | None = None  # EMA cap; set by --no-scheduler and --recipe fast
    ema_warmup: float = 10.0  # step n's decay is min(ema_decay, (1 + n) / (ema_warmup + n)): the
    #                           EMA then spans about the last n / (ema_warmup - 1) steps
    no_scheduler_compensation: str | None = None
    epochs: int = 20  # course epochs (period_steps optimizer steps each)
    epochs_explicit: bool = False  # True: --epochs N given, so N passes over the dataset
    steps: int | None = None  # overrides the length
    period_steps: int | None = None  # steps per epoch; resolved at start (or a test knob)
    total_steps: int | None = None  # resolved at start
    lr_gamma: float | None = None  # resolved at start; kept when a resume extends the length
    lr_decay_steps: int | None = None  # the steps the warm-up + cosine spans (total_steps at
    #                                    start); kept when a resume extends the length
    # objective
    sigma: float = 0.5  # single-step denoiser noise level, data in [0, 1]
    num_timesteps: int = 300  # DDPM T
    beta_start: float = 1e-4
    beta_end: float = 0.02
    loss_weighting: str = "none"  # DDPM noise loss per step: "none" (the course), "min-snr", "flow"
    min_snr_gamma: float = 5.0  # "min-snr": step i's weight is min(SNR_i, gamma) / SNR_i
    p_uncond: float = 0.1  # class dropout probability (zero one-hot = null class)
    time_sampling: str = "uniform"  # flow t / DDPM step: "uniform" (the course) or "logit-normal"
    #                                 (flow: sigmoid(N(0, 1)); DDPM: the same noise levels)
    # sampling
    sampler: str = "ddpm"  # "ddpm" | "ddim" | "euler" | "heun" | "direct" (denoisers)
    sample_steps: int = 300  # DDPM: T steps; flow: the course's num_ts Euler steps
    guidance_scale: float = 5.0
    preview_sampler: str | None = (
        None  # sampler of per-epoch grids and the GIF (None: FAST_SAMPLER)
    )
    preview_steps: int | None = None  # its steps (None: FAST_SAMPLER's 50; sample_steps for others)
    # run
    recipe: str = "course"  # the RECIPES entry whose defaults this run started from
    name: str = ""
    dataset: str = "auto"
    data_root: str = "data"
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "mps"
    mixed_precision: str = "auto"  # "auto" | "no" | "fp16" | "bf16"
    channels_last: bool = True  # train in NHWC memory format (same values, faster convolutions)
    log_every: int = 25  # steps between logged metrics (the only host syncs)
    checkpoint_every: int = 1  # epochs
    keep_checkpoints: int = 3
    milestones: tuple[int, ...] = (1, 5, 10, 15, 20)  # checkpoints kept for the figures
    wandb_mode: str | None = None  # None: online when a key is configured, else offline
    wandb_project: str = "diffusion-lab"
    extra: dict[str, Any] = field(default_factory=dict)  # resolved facts (dataset size, world)

    @property
    def class_conditional(self) -> bool:
        return self.conditioning == "class"

    @property
    def data_range(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.kind in ("denoiser", "pure-noise") else (-1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config that asdict() wrote (unknown keys ignored); ConfigError without the fields
        every run has, for a value of the wrong type, or for one that cannot train (validate)."""
        missing = [
            f.name
            for f in fields(cls)
            if f.default is MISSING and f.default_factory is MISSING and f.name not in d
        ]
        if missing:
            raise ConfigError(f"not a run config: it lacks {', '.join(missing)}")
        hints = get_type_hints(cls)
        kw = {k: v for k, v in d.items() if k in hints}
        for key, value in kw.items():
            if not _fits(value, hints[key]):
                raise ConfigError(f"{key}={value!r}: expected {_type_name(hints[key])}")
        if kw["experiment"] not in EXPERIMENTS:
            raise ConfigError(
                f"experiment {kw['experiment']!r} is not one of {', '.join(EXPERIMENTS)}"
            )
        if "milestones" in kw:
            kw["milestones"] = tuple(kw["milestones"])
        cfg = cls(**kw)
        validate(cfg)
        return cfg


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value is of a TrainConfig field's type (an int passes for a float)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return any(_fits(value, arm) for arm in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return " or ".join(_type_name(arm) for arm in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        return f"a list of {_type_name(args[0])}"
    if origin is not None:
        return origin.__name__
    return "null" if hint is type(None) else hint.__name__


_SINGLE_STEP = dict(
    hidden=128,
    batch_size=256,
    lr=1e-4,
    epochs=5,
    scheduler=False,
    sampler="direct",
    sample_steps=1,
    guidance_scale=1.0,
)
_DDPM = dict(
    kind="ddpm", hidden=64, batch_size=128, lr=1e-3, epochs=20, sampler="ddpm", sample_steps=300
)
_FLOW = dict(
    kind="flow", hidden=64, batch_size=64, lr=1e-2, epochs=10, sampler="euler", sample_steps=300
)

EXPERIMENTS: dict[str, TrainConfig] = {
    "denoiser": TrainConfig("denoiser", "denoiser", "none", **_SINGLE_STEP),
    "pure-noise": TrainConfig("pure-noise", "pure-noise", "none", **_SINGLE_STEP),
    "ddpm-time": TrainConfig("ddpm-time", conditioning="time-add", **_DDPM),
    "ddpm-class": TrainConfig("ddpm-class", conditioning="class", **_DDPM),
    "flow-time": TrainConfig("flow-time", conditioning="time-mul", **_FLOW),
    "flow-class": TrainConfig("flow-class", conditioning="class", **_FLOW),
}
LR_SCHEDULES = ("exponential", "cosine")
TIME_SAMPLINGS = ("uniform", "logit-normal")
LOSS_WEIGHTINGS = ("none", "min-snr", "flow")
SAMPLERS = (*SAMPLER_TABLE, "direct")  # the samplers table, and the denoisers' one call
WANDB_MODES = ("online", "offline", "disabled")
# evaluate's defaults (CLI and dashboard): guidance scales, samples a class (500 digits a scale),
# and images per model batch of `sample` and `evaluate`
GUIDANCE_SCALES = (0, 1, 3, 5, 7)
PER_CLASS = 50
SAMPLE_BATCH = 500
SAMPLERS_BY_KIND = {
    "ddpm": ("ddpm", "ddim"),
    "flow": ("euler", "heun", "ddpm", "ddim"),
    "denoiser": ("direct",),
    "pure-noise": ("direct",),
}
# 50-step samplers that score as the course's 300-step ones do (see `make bench`'s quality rows):
# the dashboard's interactive default, the training previews and the bench's 50-step rows.
FAST_SAMPLER = {"ddpm": ("ddpm", 50), "flow": ("heun", 50)}


def check_sampler(cfg: TrainConfig, sampler: str, steps: int) -> None:
    """ConfigError unless `sampler` applies to cfg's kind of model and can walk `steps` steps on
    it (a VP sampler: at most the model's T = cfg.num_timesteps)."""
    allowed = SAMPLERS_BY_KIND[cfg.kind]
    if sampler not in allowed:
        raise ConfigError(
            f"sampler {sampler!r} does not apply to a {cfg.kind} model; choose from "
            f"{', '.join(allowed)}"
        )
    if sampler not in (*FLOW_SAMPLERS, "direct") and not 1 <= steps <= cfg.num_timesteps:
        raise ConfigError(
            f"the {sampler} sampler takes 1 to {cfg.num_timesteps} steps on this "
            f"model (its T), got {steps}"
        )


def preview_sampler(cfg: TrainConfig) -> tuple[str, int]:
    """(sampler, steps) of the per-period grids and the GIF: the run's preview settings, else the
    50-step default of its kind (FAST_SAMPLER), else its own sampler and steps."""
    default_sampler, default_steps = FAST_SAMPLER.get(cfg.kind, (cfg.sampler, cfg.sample_steps))
    return cfg.preview_sampler or default_sampler, cfg.preview_steps or default_steps


# ----------------------------------------------------------------------------- recipes
# A recipe is a set of defaults laid over an experiment's course defaults; every explicit option
# still wins. "course" is the course exactly; "fast" reaches the quality bar in minutes on a CPU.
RECIPES: tuple[str, ...] = ("course", "fast")
RECIPE_HELP = {
    "course": "the course's hyperparameters, unchanged",
    "fast": "DDPM and flow experiments: warm-up + cosine learning rate, EMA weights, "
    "logit-normal time draws, D=32; a few minutes on a CPU (the denoisers keep the "
    "course's settings)",
}
# Per kind of model: the fields "fast" changes (kinds not listed keep the course's).
FAST_RECIPE: dict[str, dict[str, Any]] = {
    "flow": dict(
        lr_schedule="cosine",
        warmup_steps=100,
        lr_final_ratio=0.02,
        ema_decay=0.999,
        ema_warmup=4.0,
        time_sampling="logit-normal",
        steps=1400,
        hidden=32,
        sampler="heun",
        sample_steps=50,
    ),
    # DDPM trains on flow matching's noise levels (logit-normal) with its weights (loss_weighting)
    "ddpm": dict(
        lr_schedule="cosine",
        warmup_steps=50,
        lr_final_ratio=0.02,
        ema_decay=0.999,
        time_sampling="logit-normal",
        loss_weighting="flow",
        steps=1400,
        hidden=32,
        batch_size=64,
        lr=3e-3,
        sampler="ddpm",
        sample_steps=100,
    ),
}
RECIPE_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {"course": {}, "fast": FAST_RECIPE}


def recipe_defaults(experiment: str, recipe: str = "course") -> TrainConfig:
    """The defaults of `experiment` under `recipe` (ConfigError for unknown names)."""
    if experiment not in EXPERIMENTS:
        raise ConfigError(
            f"unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}"
        )
    if recipe not in RECIPES:
        raise ConfigError(f"--recipe {recipe!r} is not one of {', '.join(RECIPES)}")
    base = EXPERIMENTS[experiment]
    return replace(base, recipe=recipe, **RECIPE_OVERRIDES[recipe].get(base.kind, {}))


def default_run_name(experiment: str, no_scheduler: bool = False) -> str:
    """The run folder's name without --name: the experiment, "-no-scheduler" appended."""
    return experiment + ("-no-scheduler" if no_scheduler else "")


def constant_lr_factor(cfg: TrainConfig) -> float:
    """The --no-scheduler rate as a fraction of lr0: the geometric middle of the range lr0 -> last
    rate that cfg's schedule spans (ExponentialLR: x0.1 over the run; cosine: lr_final_ratio)."""
    return math.sqrt(cfg.lr_final_ratio if cfg.lr_schedule == "cosine" else COURSE_LR_DECAY)


def make_config(
    experiment: str, *, no_scheduler: bool = False, recipe: str | None = None, **overrides: Any
) -> TrainConfig:
    """Defaults of `experiment` under `recipe` (default "course") with `overrides` (None values
    are ignored) applied; an explicit ``epochs`` replaces a recipe's ``steps``.

    `no_scheduler` makes the learning rate constant (no decay, no warm-up) with the documented
    compensation (NO_SCHEDULER_HELP). Raises ConfigError for unknown names and invalid values.
    """
    base = recipe_defaults(experiment, recipe or "course")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "epochs" in overrides:
        overrides["epochs_explicit"] = True
        overrides.setdefault("steps", None)
    if no_scheduler and base.scheduler:
        overrides.setdefault("lr", base.lr * constant_lr_factor(base))
        overrides.setdefault("ema_decay", base.ema_decay or NO_SCHEDULER_EMA_DECAY)
        overrides.setdefault("warmup_steps", 0)
        overrides["no_scheduler_compensation"] = NO_SCHEDULER_HELP
    if no_scheduler:
        overrides["scheduler"] = False
    if not overrides.get("name"):
        overrides["name"] = default_run_name(experiment, no_scheduler)
    cfg = replace(base, **overrides)
    if "min_snr_gamma" in overrides and cfg.loss_weighting != "min-snr":
        raise ConfigError("--min-snr-gamma is the G of --loss-weighting min-snr; add that option")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError on values that cannot train."""

    def positive(name: str, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")

    for name in (
        "epochs",
        "steps",
        "period_steps",
        "batch_size",
        "lr",
        "hidden",
        "sample_steps",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "preview_steps",
        "lr_final_ratio",
        "min_snr_gamma",
    ):
        positive(name, getattr(cfg, name))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
    if cfg.arch == "improved":
        try:
            check_width(cfg.hidden)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if cfg.loss_weighting != "none" and cfg.kind != "ddpm":
        raise ConfigError(
            f"--loss-weighting weights the DDPM noise loss; {cfg.experiment} is a {cfg.kind} model"
        )
    if cfg.time_sampling != "uniform" and cfg.kind not in ("ddpm", "flow"):
        raise ConfigError(
            f"--time-sampling draws DDPM and flow times; {cfg.experiment} has no time"
        )
    if cfg.warmup_steps < 0:
        raise ConfigError(f"--warmup-steps must be >= 0, got {cfg.warmup_steps}")
    if cfg.warmup_steps and cfg.scheduler and cfg.lr_schedule == "exponential":
        raise ConfigError(
            "--warmup-steps needs --lr-schedule cosine or --no-scheduler "
            "(the course's ExponentialLR has no warm-up)"
        )
    checks = [
        (cfg.arch, ARCHS, "arch"),
        (cfg.sampler, SAMPLERS, "sampler"),
        (cfg.dataset, DATASETS, "dataset"),
        (cfg.recipe, RECIPES, "recipe"),
        (cfg.lr_schedule, LR_SCHEDULES, "lr-schedule"),
        (cfg.time_sampling, TIME_SAMPLINGS, "time-sampling"),
        (cfg.loss_weighting, LOSS_WEIGHTINGS, "loss-weighting"),
        (cfg.mixed_precision, PRECISIONS, "mixed-precision"),
        (cfg.device, DEVICES, "device"),
    ]
    if cfg.preview_sampler is not None:
        checks.append((cfg.preview_sampler, SAMPLERS, "preview-sampler"))
    if cfg.wandb_mode is not None:
        checks.append((cfg.wandb_mode, WANDB_MODES, "wandb-mode"))
    for value, allowed, opt in checks:
        if value not in allowed:
            raise ConfigError(f"--{opt} {value!r} is not one of {', '.join(allowed)}")
    for option, (sampler, steps) in (
        ("--sampler / --sample-steps", (cfg.sampler, cfg.sample_steps)),
        ("--preview-sampler / --preview-steps", preview_sampler(cfg)),
    ):
        try:
            check_sampler(cfg, sampler, steps)
        except ConfigError as e:
            raise ConfigError(f"{option}: {e}") from None
    if not 0.0 <= cfg.p_uncond < 1.0:
        raise ConfigError(f"--p-uncond must be in [0, 1), got {cfg.p_uncond}")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise ConfigError(f"--ema-decay must be in (0, 1), got {cfg.ema_decay}")
    if cfg.ema_warmup <= 1.0:
        raise ConfigError(f"--ema-warmup must be > 1, got {cfg.ema_warmup}")


def resolve_length(cfg: TrainConfig, dataset_size: int, pass_steps: int) -> TrainConfig:
    """Fill period_steps, total_steps, lr_gamma and lr_decay_steps for a dataset of
    `dataset_size` images that the batcher covers in `pass_steps` steps.

    Default length on a dataset smaller than MNIST: the course's number of optimizer steps
    (an epoch = ceil(60000 / batch) steps); otherwise an epoch is one pass. `steps` overrides the
    total.
    """
    epoch_steps = cfg.period_steps
    if epoch_steps is None:
        scaled = not cfg.epochs_explicit and dataset_size < COURSE_TRAIN_SIZE
        epoch_steps = math.ceil(COURSE_TRAIN_SIZE / cfg.batch_size) if scaled else pass_steps
    total = cfg.steps if cfg.steps is not None else cfg.epochs * epoch_steps
    epochs = math.ceil(total / epoch_steps)
    gamma = (
        COURSE_LR_DECAY ** (1.0 / epochs)
        if cfg.scheduler and cfg.lr_schedule == "exponential"
        else 1.0
    )
    return replace(
        cfg, period_steps=epoch_steps, total_steps=total, lr_gamma=gamma, lr_decay_steps=total
    )


def num_periods(cfg: TrainConfig) -> int:
    """Number of epochs of a resolved config; the last may be partial."""
    return math.ceil(cfg.total_steps / cfg.period_steps)


# Options a resume may change: the name (its folder's), where and how it runs, and the length (which
# only extends the run;
# the epoch length and the LR schedule stay as stored: past its old end a run keeps decaying at
# lr_gamma, or stays at the cosine's final rate).
RESUME_RUNTIME = (
    "name",
    "device",
    "mixed_precision",
    "wandb_mode",
    "wandb_project",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "preview_steps",
    "preview_sampler",
    "data_root",
)


def resume_config(stored: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """The stored config of a run, with the options a resume may change taken from `given`.

    `given` holds only the options the user passed (None values ignored). Any other option that
    differs from the stored run raises ConfigError (a resume continues the same training).
    """
    given = {k: v for k, v in given.items() if v is not None}
    changes = {k: given.pop(k) for k in RESUME_RUNTIME if k in given}
    epochs, steps = given.pop("epochs", None), given.pop("steps", None)
    for key, value in given.items():
        if getattr(stored, key) != value:
            raise ConfigError(
                f"run {stored.name!r} was created with {key}={getattr(stored, key)!r}; "
                f"--resume keeps the stored settings (drop that option or use a new --name)"
            )
    if stored.lr_decay_steps is None:  # a run recorded before the field existed
        changes["lr_decay_steps"] = stored.total_steps
    if steps is not None:
        changes["total_steps"], changes["steps"] = steps, steps
    elif epochs is not None:
        changes["total_steps"], changes["epochs"] = epochs * stored.period_steps, epochs
    cfg = replace(stored, **changes)
    validate(cfg)
    return cfg
