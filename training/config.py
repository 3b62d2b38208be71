"""A run's configuration: the user's options, and the plan resolved when it starts.

`TrainOptions` holds what a user chooses (`python -m training` flags, the Train page's form, an
options file); `EXPERIMENTS` maps each experiment to its course defaults, `RECIPES` lay other
defaults over them, and `make_options` applies a user's choices. `TrainPlan` holds what the
trainer resolved at the start: the epoch length, the total steps, the learning-rate decay, the
dataset actually used and its size, the processes, device and precision. A run's `config.json`
is both, `RunConfig`: the options' fields with the plan under the key "plan". Both are checked
against their type hints when read (training.jsontypes); config.json files of the layout before
the split (one flat object with `period_steps`, `extra`, ...) are read and converted in memory
(only a resume writes one anew, and says so).

An **epoch** is `TrainPlan.epoch_steps` optimizer steps (docs/course.md 3.8): one pass over the
dataset with an explicit `--epochs N` or on a dataset as large as MNIST; otherwise a course epoch,
ceil(60000 / batch_size) steps, so that a run on mnist-5k takes the course's number of steps.
Epochs are counted from 1; step s lies in epoch ceil(s / epoch_steps), the last may be partial.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from samplers.app.arguments import MAX_SEED
from samplers.app.devices import Device, Precision
from samplers.app.files import write_text_atomic
from samplers.table import SAMPLER_NAMES, sampler_spec, samplers_for

from .data import DatasetName
from .jsontypes import JSONTypeError, at, from_json
from .models import Arch, Conditioning, check_width

Experiment = Literal["denoiser", "pure-noise", "ddpm-time", "ddpm-class", "flow-time", "flow-class"]
Kind = Literal["denoiser", "pure-noise", "ddpm", "flow"]
LrSchedule = Literal["exponential", "cosine"]
TimeSampling = Literal["uniform", "logit-normal"]
LossWeighting = Literal["none", "min-snr", "flow"]
Recipe = Literal["course", "fast"]
WandbMode = Literal["online", "offline", "disabled"]
DistillMethod = Literal["flowmap"]
TeacherSolver = Literal["dpmpp_2m", "heun", "ddim"]  # deterministic ODE solvers of a teacher
DistillLoss = Literal["pseudo_huber", "squared"]
# the samplers table's names (read off the table, so a solver added there is a choice here) and
# the denoisers' one call
SamplerName = Literal[(*SAMPLER_NAMES, "direct")]

COURSE_TRAIN_SIZE = 60_000  # MNIST train split: the course's epochs are passes over it
COURSE_EPOCHS: dict[Kind, int] = {"denoiser": 5, "pure-noise": 5, "ddpm": 20, "flow": 10}
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


# The bounds of the size options (validate checks them, the CLI's help and errors quote them):
# each far above any useful value, and low enough that a typo fails at once, naming its limit,
# instead of allocating gigabytes or running for years. Sizes are whole numbers from 1; a seed
# from 0.
LIMITS: dict[str, int] = {
    "hidden": 512,  # UNet width D (course 64): D=512 is 129M weights (improved: 236M)
    "num_classes": 1000,
    "batch_size": COURSE_TRAIN_SIZE,  # no dataset holds more images (the trainer checks its own)
    "epochs": 100_000,
    "steps": 10_000_000,
    "epoch_steps": 10_000_000,
    "warmup_steps": 10_000_000,
    "num_timesteps": 10_000,  # DDPM T (course 300)
    "sample_steps": 10_000,  # a VP sampler's are also at most T
    "preview_steps": 10_000,
    "log_every": 10_000_000,
    "checkpoint_every": 100_000,
    "keep_checkpoints": 1_000,
    "seed": MAX_SEED,
}
# The bounds of a request for samples (`sample`, `evaluate`, the dashboard's evaluation): digits a
# class (10,000 a class: 100,000 digits, 300 MB as float32), images per model call, repeats.
SAMPLE_LIMITS: dict[str, int] = {"per_class": 10_000, "batch": 4096, "repeats": 100}


class ConfigError(ValueError):
    """A user-caused configuration problem; the CLI prints it as one line and exits with 2."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; nothing non-finite was saved (CLI: exit
    1)."""


@dataclass(frozen=True)
class DistillOptions:
    """How a student was distilled (training.distill; its run's config.json key "distill").

    Teacher data: `trajectories` seeded noises, each with a random label (the null class with
    p_null) and guidance scale (exactly 1 with p_w1, else uniform in [w_min, w_max]), integrated
    along the teacher's guided probability-flow ODE (`teacher_sampler`, `substeps` steps a grid
    interval: dpmpp_2m and 1 by default; heun on a flow teacher or ddim on a DDPM in older
    students) and kept at the `times` of its `grid` intervals (flow times, rising to 1). Pairs:
    a random segment of the uniform N-step subgrid, N drawn from `levels`; with p_diag a
    diagonal pair (s = t). `loss`: of a pair's data-space end-point error (FlowMapObjective);
    "squared" in students made before the field, "pseudo_huber" for new ones (student_options).
    """

    teacher: str  # the teacher run's folder, as given
    teacher_checkpoint: str  # its checkpoint folder's name
    teacher_sha256: str  # of its sampling weights
    times: tuple[float, ...]  # the grid's grid + 1 flow times
    method: DistillMethod = "flowmap"
    teacher_sampler: TeacherSolver = "dpmpp_2m"
    substeps: int = 1
    trajectories: int = 4096
    grid: int = 16
    p_null: float = 0.1
    p_w1: float = 0.2
    w_min: float = 1.0
    w_max: float = 7.0
    levels: tuple[int, ...] = (1, 2, 4, 8)
    p_diag: float = 0.1
    loss: DistillLoss = "squared"


@dataclass(frozen=True)
class TrainOptions:
    """What a user chooses for a run. Images: denoisers in [0, 1], DDPM/flow in [-1, 1]."""

    experiment: Experiment
    kind: Kind  # the experiment's
    conditioning: Conditioning  # the experiment's (training.models)
    # model
    arch: Arch = "course"
    hidden: int = 64  # the course's D
    num_classes: int = 10
    # optimization
    batch_size: int = 128  # global batch (split over processes)
    lr: float = 1e-3
    scheduler: bool = True  # False: constant learning rate (after any warm-up)
    lr_schedule: LrSchedule = "exponential"  # ExponentialLR(0.1 ** (1 / epochs)) an epoch, or a
    #                                          per-step cosine from lr to lr * lr_final_ratio
    lr_final_ratio: float = 0.1  # "cosine": the last step's rate as a fraction of lr
    warmup_steps: int = 0  # linear learning-rate warm-up from lr / warmup_steps (per-step)
    ema_decay: float | None = None  # EMA cap; set by --no-scheduler and --recipe fast
    ema_warmup: float = 10.0  # step n's decay is min(ema_decay, (1 + n) / (ema_warmup + n)): the
    #                           EMA then spans about the last n / (ema_warmup - 1) steps
    adam_beta2: float = 0.999  # Adam's second-moment decay
    grad_clip: float | None = None  # clip the gradient's global norm to this (None: no clipping)
    # length (run_length): `steps`, else `epochs` passes over the dataset, else the course's
    epochs: int | None = None  # N passes over the dataset (None: the course's course_epochs)
    steps: int | None = None  # optimizer steps in all; wins over epochs
    epoch_steps: int | None = None  # fixes the epoch length (a test knob; None: see the docstring)
    # objective
    sigma: float = 0.5  # single-step denoiser noise level, data in [0, 1]
    num_timesteps: int = 300  # DDPM T
    beta_start: float = 1e-4
    beta_end: float = 0.02
    loss_weighting: LossWeighting = "none"  # DDPM noise loss per step ("none": the course's)
    min_snr_gamma: float = 5.0  # "min-snr": step i's weight is min(SNR_i, gamma) / SNR_i
    p_uncond: float = 0.1  # class dropout probability (zero one-hot = null class)
    time_sampling: TimeSampling = "uniform"  # flow t / DDPM step density ("uniform": the course)
    # sampling
    sampler: SamplerName = "ddpm"  # the run's default sampler ("direct": the denoisers)
    sample_steps: int = 300  # DDPM: T steps; flow: the course's num_ts Euler steps
    guidance_scale: float = 5.0
    preview_sampler: SamplerName | None = None  # per-epoch grids and the GIF (None: FAST_SAMPLER)
    preview_steps: int | None = None  # its steps (None: FAST_SAMPLER's 50; sample_steps for others)
    # run
    recipe: Recipe = "course"  # the RECIPES entry whose defaults this run started from
    name: str = ""
    dataset: Literal["auto", DatasetName] = "auto"
    data_root: str = "data"
    seed: int = 0
    device: Device = "auto"
    mixed_precision: Literal["auto", Precision] = "auto"
    channels_last: bool = True  # train in NHWC memory format (same values, faster convolutions)
    log_every: int = 25  # steps between logged metrics (the only host syncs)
    checkpoint_every: int = 1  # epochs
    keep_checkpoints: int = 3
    milestones: tuple[int, ...] = (1, 5, 10, 15, 20)  # checkpoints kept for the figures
    wandb_mode: WandbMode | None = None  # None: online when a key is configured, else offline
    wandb_project: str = "diffusion-lab"
    distill: DistillOptions | None = None  # a distilled student's (None: a model trained on data)

    @property
    def class_conditional(self) -> bool:
        return self.conditioning == "class"

    @property
    def is_student(self) -> bool:
        """A few-step student distilled from a teacher run (training.distill)."""
        return self.distill is not None

    @property
    def data_range(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.kind in ("denoiser", "pure-noise") else (-1.0, 1.0)

    @property
    def course_epochs(self) -> int:
        """The course's number of epochs for this kind of model (its length without --epochs)."""
        return COURSE_EPOCHS[self.kind]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, source: str = "options") -> TrainOptions:
        """The options in `data`: an options object, a run's config.json (its plan ignored), or a
        config.json of the layout before the plan (converted); ConfigError naming `source` and
        the field for a value of the wrong type or one that cannot train (validate)."""
        if isinstance(data, dict) and "plan" not in data and _OLD_LAYOUT & data.keys():
            return _from_old_layout(data, source).options
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "plan"}
        try:
            return validate(from_json(cls, data, source))
        except JSONTypeError as e:
            raise ConfigError(str(e)) from None
        except ConfigError as e:
            raise ConfigError(at(source, str(e))) from None


@dataclass(frozen=True)
class TrainPlan:
    """What the trainer resolved when a run started (config.json's "plan"). A resume keeps the
    epoch length and the learning-rate decay, takes a new total (a longer run) and records the
    device, precision and processes it runs on."""

    epoch_steps: int  # optimizer steps of an epoch (the module docstring says which)
    total_steps: int  # optimizer steps of the whole run
    lr_gamma: float  # ExponentialLR factor an epoch, 0.1 ** (1 / epochs); 1.0 without that decay
    lr_decay_steps: int  # the steps the per-step warm-up + cosine spans (the first total_steps)
    dataset: DatasetName  # the dataset trained on ("auto" resolved)
    train_size: int  # images in its training split
    world_size: int  # training processes
    device: str  # torch's name of the device, e.g. "cpu", "cuda:0"
    mixed_precision: Precision  # the autocast "auto" resolved to

    @property
    def epochs(self) -> int:
        """Epochs of the run; the last may be partial."""
        return self.epoch_of(self.total_steps)

    def epoch_of(self, step: int) -> int:
        """The epoch that step `step` (1-based; 0: none yet) belongs to: ceil(step /
        epoch_steps)."""
        return math.ceil(step / self.epoch_steps)


@dataclass(frozen=True)
class RunConfig:
    """A run's config.json: its options, and the plan resolved at its start."""

    options: TrainOptions
    plan: TrainPlan

    def to_json(self) -> dict[str, Any]:
        """config.json's object: the options' fields, and the plan under "plan"."""
        return {**self.options.to_json(), "plan": asdict(self.plan)}

    @classmethod
    def from_json(cls, data: Any, source: str = "config.json") -> RunConfig:
        """The RunConfig that to_json wrote, or one converted from the layout before the plan;
        ConfigError (one line naming `source` and the field) for one that does not fit."""
        if not isinstance(data, dict):
            raise ConfigError(at(source, "not a run config (not a JSON object)"))
        if "plan" not in data:
            if not _OLD_LAYOUT & data.keys():
                raise ConfigError(at(source, "not a run config (it has no plan)"))
            return _from_old_layout(data, source)
        options = TrainOptions.from_json(data, source)
        try:
            return cls(options, from_json(TrainPlan, data["plan"], source, path="plan"))
        except JSONTypeError as e:
            raise ConfigError(str(e)) from None


def read_options(path: str | Path) -> TrainOptions:
    """The options in a JSON file (save_options', or a run's config.json); FileNotFoundError, or
    ConfigError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return TrainOptions.from_json(data, str(path))


def save_options(path: str | Path, options: TrainOptions) -> None:
    """Write `options` as JSON, atomically (what `python -m training --config` reads)."""
    write_text_atomic(path, json.dumps(options.to_json(), indent=2))


# config.json before the plan: one flat object, these fields beside the options
_OLD_LAYOUT = {
    "period_steps",
    "total_steps",
    "lr_gamma",
    "lr_decay_steps",
    "epochs_explicit",
    "no_scheduler_compensation",
    "extra",
}


def _from_old_layout(d: dict[str, Any], source: str) -> RunConfig:
    """A RunConfig from a config.json written before the plan (one flat object: the resolved
    values beside the options, `extra` holding size, processes, device and precision)."""
    options = {k: v for k, v in d.items() if k not in _OLD_LAYOUT}
    extra = d.get("extra") if isinstance(d.get("extra"), dict) else {}
    plan = {
        "epoch_steps": d.get("period_steps"),
        "total_steps": d.get("total_steps"),
        "lr_gamma": d.get("lr_gamma"),
        "lr_decay_steps": d.get("lr_decay_steps") or d.get("total_steps"),
        "dataset": d.get("dataset"),  # that trainer wrote the dataset it used into the options
        "train_size": extra.get("train_size"),
        "world_size": extra.get("world_size"),
        "device": extra.get("device"),
        "mixed_precision": extra.get("mixed_precision", d.get("mixed_precision")),
    }
    plan = {k: v for k, v in plan.items() if v is not None}
    # its `epochs` was the course's length unless `epochs_explicit` (then passes over the data)
    course = COURSE_EPOCHS.get(d.get("kind"), 0)
    epochs = d.get("epochs", course)
    options["epochs"] = epochs if d.get("epochs_explicit") or epochs != course else None
    epoch_steps, total = d.get("period_steps"), d.get("total_steps")
    if isinstance(epoch_steps, int) and isinstance(total, int):
        steps, epochs = options.get("steps"), options["epochs"] or course
        if (steps if steps is not None else epochs * epoch_steps) != total:
            options.update(steps=total, epochs=None)  # a resume of that version extended it so
    try:
        parsed = from_json(TrainOptions, options, source, unknown="ignore")
        return RunConfig(validate(parsed), from_json(TrainPlan, plan, source, path="plan"))
    except JSONTypeError as e:
        raise ConfigError(str(e)) from None
    except ConfigError as e:
        raise ConfigError(at(source, str(e))) from None


_SINGLE_STEP = dict(
    hidden=128,
    batch_size=256,
    lr=1e-4,
    scheduler=False,
    sampler="direct",
    sample_steps=1,
    guidance_scale=1.0,
)
_DDPM = dict(kind="ddpm", hidden=64, batch_size=128, lr=1e-3, sampler="ddpm", sample_steps=300)
_FLOW = dict(kind="flow", hidden=64, batch_size=64, lr=1e-2, sampler="euler", sample_steps=300)

EXPERIMENTS: dict[Experiment, TrainOptions] = {
    "denoiser": TrainOptions("denoiser", "denoiser", "none", **_SINGLE_STEP),
    "pure-noise": TrainOptions("pure-noise", "pure-noise", "none", **_SINGLE_STEP),
    "ddpm-time": TrainOptions("ddpm-time", conditioning="time-add", **_DDPM),
    "ddpm-class": TrainOptions("ddpm-class", conditioning="class", **_DDPM),
    "flow-time": TrainOptions("flow-time", conditioning="time-mul", **_FLOW),
    "flow-class": TrainOptions("flow-class", conditioning="class", **_FLOW),
}
LR_SCHEDULES: tuple[LrSchedule, ...] = get_args(LrSchedule)
TIME_SAMPLINGS: tuple[TimeSampling, ...] = get_args(TimeSampling)
LOSS_WEIGHTINGS: tuple[LossWeighting, ...] = get_args(LossWeighting)
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
WANDB_MODES: tuple[WandbMode, ...] = get_args(WandbMode)
DISTILL_METHODS: tuple[DistillMethod, ...] = get_args(DistillMethod)
# evaluate's defaults (CLI and dashboard): guidance scales, samples a class (500 digits a scale),
# and images per model batch of `sample` and `evaluate`
GUIDANCE_SCALES = (0, 1, 3, 5, 7)
PER_CLASS = 50
SAMPLE_BATCH = 500
# What each kind of model walks: a DDPM model the VP samplers; a flow model its own flow samplers
# first, then the VP-only ones through samplers.VelocityAsEps.
SAMPLERS_BY_KIND: dict[Kind, tuple[str, ...]] = {
    "ddpm": samplers_for("vp"),
    "flow": (
        *samplers_for("flow"),
        *(s for s in samplers_for("vp") if s not in samplers_for("flow")),
    ),
    "denoiser": ("direct",),
    "pure-noise": ("direct",),
}
# 50-step samplers that score as the course's 300-step ones do (see `make bench`'s quality rows):
# the dashboard's interactive default, the training previews and the bench's 50-step rows.
FAST_SAMPLER = {"ddpm": ("ddpm", 50), "flow": ("heun", 50)}


def samplers_of(options: TrainOptions) -> tuple[str, ...]:
    """The samplers that apply to a run of `options`: its kind's, or a student's flowmap."""
    return ("flowmap",) if options.is_student else SAMPLERS_BY_KIND[options.kind]


def interactive_sampler(options: TrainOptions) -> tuple[str, int]:
    """(sampler, steps) a page starts from: FAST_SAMPLER's 50-step one of the run's kind, a
    student's own, or the run's own."""
    own = (options.sampler, options.sample_steps)
    return own if options.is_student else FAST_SAMPLER.get(options.kind, own)


def check_sampler(options: TrainOptions, sampler: str, steps: int) -> None:
    """ConfigError unless `sampler` applies to the options' kind of model and can walk `steps`
    steps on it (a VP sampler: at most the model's T = options.num_timesteps; a student's
    flowmap: at most its grid's intervals). A student takes flowmap only, and only it."""
    if options.distill is not None:
        grid = options.distill.grid
        if sampler != "flowmap":
            raise ConfigError(
                f"sampler {sampler!r} does not apply to a distilled student; it samples with "
                "flowmap only"
            )
        if not 1 <= steps <= grid:
            raise ConfigError(
                f"the flowmap sampler takes 1 to {grid} steps on this student (its teacher "
                f"data's grid), got {steps}"
            )
        return
    allowed = SAMPLERS_BY_KIND[options.kind]
    if sampler not in allowed:
        raise ConfigError(
            f"sampler {sampler!r} does not apply to a {options.kind} model; choose from "
            f"{', '.join(allowed)}"
        )
    vp_steps = sampler != "direct" and not walks_flow(options.kind, sampler)
    if vp_steps and not 1 <= steps <= options.num_timesteps:
        raise ConfigError(
            f"the {sampler} sampler takes 1 to {options.num_timesteps} steps on this "
            f"model (its T), got {steps}"
        )


def walks_flow(kind: Kind, sampler: str) -> bool:
    """Whether `sampler` walks a `kind` model on the flow time grid with its velocity (else on the
    model's VP schedule: a flow model's velocity through samplers.VelocityAsEps)."""
    return kind == "flow" and "flow" in sampler_spec(sampler).kinds


def preview_sampler(options: TrainOptions) -> tuple[str, int]:
    """(sampler, steps) of the per-epoch grids and the GIF: the run's preview settings, else the
    50-step default of its kind (FAST_SAMPLER), else its own sampler and steps."""
    fallback = (options.sampler, options.sample_steps)
    default_sampler, default_steps = FAST_SAMPLER.get(options.kind, fallback)
    return options.preview_sampler or default_sampler, options.preview_steps or default_steps


# A distilled student's options over its teacher's (training.distill, docs/distillation.md).
STUDENT_DEFAULTS: dict[str, Any] = dict(
    batch_size=128,
    lr=1e-3,
    scheduler=True,
    lr_schedule="cosine",
    warmup_steps=100,
    lr_final_ratio=0.05,
    ema_decay=0.999,
    ema_warmup=10.0,
    adam_beta2=0.99,
    grad_clip=1.0,
    epochs=None,
    steps=2000,
    epoch_steps=500,
    p_uncond=0.0,  # the teacher data carries the null class (p_null)
    time_sampling="uniform",
    loss_weighting="none",
    sampler="flowmap",
    sample_steps=4,
    preview_sampler="flowmap",
    preview_steps=4,
)


# ----------------------------------------------------------------------------- recipes
# A recipe is a set of defaults laid over an experiment's course defaults; every explicit option
# still wins. "course" is the course exactly; "fast" reaches the quality bar in minutes on a CPU.
RECIPES: tuple[Recipe, ...] = get_args(Recipe)
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


def recipe_defaults(experiment: str, recipe: str = "course") -> TrainOptions:
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


def constant_lr_factor(options: TrainOptions) -> float:
    """The --no-scheduler rate as a fraction of lr0: the geometric middle of the range lr0 -> last
    rate that the schedule spans (ExponentialLR: x0.1 over the run; cosine: lr_final_ratio)."""
    return math.sqrt(options.lr_final_ratio if options.lr_schedule == "cosine" else COURSE_LR_DECAY)


def make_options(
    experiment: str,
    *,
    recipe: str | None = None,
    no_scheduler: bool = False,
    base: TrainOptions | None = None,
    **overrides: Any,
) -> TrainOptions:
    """The options of a new run: `base` (an options file's), else the defaults of `experiment`
    under `recipe` (default "course"), with `overrides` (None values ignored) applied. The CLI
    and the Train page both build a run's options here.

    `epochs` and `steps` set the length: either one replaces the other's default (an explicit
    `epochs` replaces the fast recipe's `steps`); both at once are refused. `no_scheduler` makes
    the learning rate constant (no decay, no warm-up) with the compensation NO_SCHEDULER_HELP
    describes. ConfigError for unknown names and for values that cannot train (validate).
    """
    if base is None:
        base = recipe_defaults(experiment, recipe or "course")
    elif recipe is not None or no_scheduler:
        raise ConfigError(
            "--recipe and --no-scheduler choose defaults, and an options file (--config) "
            "gives them all: set the options in the file instead"
        )
    elif base.experiment != experiment:
        raise ConfigError(f"the options are for {base.experiment}, not {experiment}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = overrides.keys() - {f.name for f in fields(TrainOptions)}
    if unknown:
        raise ConfigError(f"no such option: {', '.join(sorted(unknown))}")
    if "epochs" in overrides and "steps" in overrides:
        raise ConfigError(
            "give --steps or --epochs, not both (--steps counts optimizer steps, "
            "--epochs passes over the dataset)"
        )
    if "epochs" in overrides:
        overrides["steps"] = None
    if "steps" in overrides:
        overrides.setdefault("epochs", None)
    if no_scheduler and base.scheduler:
        overrides.setdefault("lr", base.lr * constant_lr_factor(base))
        overrides.setdefault("ema_decay", base.ema_decay or NO_SCHEDULER_EMA_DECAY)
        overrides.setdefault("warmup_steps", 0)
    if no_scheduler:
        overrides["scheduler"] = False
    if "name" not in overrides and not base.name:
        overrides["name"] = default_run_name(experiment, no_scheduler)
    options = replace(base, **overrides)
    if "min_snr_gamma" in overrides and options.loss_weighting != "min-snr":
        raise ConfigError("--min-snr-gamma is the G of --loss-weighting min-snr; add that option")
    return validate(options)


def validate(options: TrainOptions) -> TrainOptions:
    """`options` checked against TrainOptions' type hints (ints taken as floats where a float is
    due) and for values that cannot train; ConfigError naming the option."""
    try:
        options = from_json(TrainOptions, asdict(options), "options")
    except JSONTypeError as e:
        raise ConfigError(str(e)) from None

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for name in ("lr", "lr_final_ratio", "min_snr_gamma", "grad_clip", *LIMITS):
        value = getattr(options, name)
        if value is None:
            continue
        if name in ("seed", "warmup_steps"):
            if value < 0:
                raise ConfigError(f"{flag(name)} must be >= 0, got {value}")
        elif value <= 0:
            raise ConfigError(f"{flag(name)} must be positive, got {value}")
        if name in LIMITS and value > LIMITS[name]:
            raise ConfigError(f"{flag(name)} must be at most {LIMITS[name]:,}, got {value:,}")
    for f in fields(options):
        value = getattr(options, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
    own = EXPERIMENTS[options.experiment]
    if (options.kind, options.conditioning) != (own.kind, own.conditioning):
        raise ConfigError(
            f"{options.experiment} is a {own.kind} model with {own.conditioning!r} conditioning; "
            f"got kind {options.kind!r}, conditioning {options.conditioning!r}"
        )
    if options.arch == "improved":
        try:
            check_width(options.hidden)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if options.loss_weighting != "none" and options.kind != "ddpm":
        raise ConfigError(
            f"--loss-weighting weights the DDPM noise loss; {options.experiment} is a "
            f"{options.kind} model"
        )
    if options.time_sampling != "uniform" and options.kind not in ("ddpm", "flow"):
        raise ConfigError(
            f"--time-sampling draws DDPM and flow times; {options.experiment} has no time"
        )
    if options.warmup_steps and options.scheduler and options.lr_schedule == "exponential":
        raise ConfigError(
            "--warmup-steps needs --lr-schedule cosine or --no-scheduler "
            "(the course's ExponentialLR has no warm-up)"
        )
    for option, (sampler, steps) in (
        ("--sampler / --sample-steps", (options.sampler, options.sample_steps)),
        ("--preview-sampler / --preview-steps", preview_sampler(options)),
    ):
        try:
            check_sampler(options, sampler, steps)
        except ConfigError as e:
            raise ConfigError(f"{option}: {e}") from None
    if not 0.0 <= options.p_uncond < 1.0:
        raise ConfigError(f"--p-uncond must be in [0, 1), got {options.p_uncond}")
    if options.ema_decay is not None and not 0.0 < options.ema_decay < 1.0:
        raise ConfigError(f"--ema-decay must be in (0, 1), got {options.ema_decay}")
    if options.ema_warmup <= 1.0:
        raise ConfigError(f"--ema-warmup must be > 1, got {options.ema_warmup}")
    if not 0.0 <= options.adam_beta2 < 1.0:
        raise ConfigError(f"--adam-beta2 must be in [0, 1), got {options.adam_beta2}")
    if options.distill is not None:
        check_distill(options)
    return options


def check_distill(options: TrainOptions) -> None:
    """ConfigError unless a student's options can train: a class-conditional course UNet, and
    distillation settings that draw valid pairs and guidance scales."""
    d = options.distill
    assert d is not None
    if not options.class_conditional or options.arch != "course":
        raise ConfigError(
            "a student is distilled from a class-conditional course UNet (flow-class or "
            f"ddpm-class); got {options.experiment} with arch {options.arch}"
        )
    if d.trajectories < 1 or d.grid < 1 or d.substeps < 1:
        raise ConfigError("--trajectories, the grid and the substeps must be positive")
    own = samplers_for("flow" if options.kind == "flow" else "vp")
    if d.teacher_sampler not in own:
        fits = [s for s in get_args(TeacherSolver) if s in own]
        raise ConfigError(
            f"the teacher's solver {d.teacher_sampler!r} does not walk a {options.kind} "
            f"model's own schedule; choose from {', '.join(fits)}"
        )
    if len(d.times) != d.grid + 1:
        raise ConfigError(f"the grid of {d.grid} intervals needs {d.grid + 1} times")
    bad = [n for n in d.levels if n < 1 or d.grid % n]
    if not d.levels or bad:
        raise ConfigError(f"pair levels must divide the grid of {d.grid}; got {list(d.levels)}")
    for name in ("p_null", "p_w1", "p_diag"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {getattr(d, name)}")
    if not 1.0 <= d.w_min <= d.w_max:
        raise ConfigError(f"need 1 <= w_min <= w_max, got {d.w_min}, {d.w_max}")


# ----------------------------------------------------------------------------- the plan
def epoch_length(options: TrainOptions, train_size: int, pass_steps: int) -> int:
    """Optimizer steps of an epoch on a dataset of `train_size` images that the batches cover in
    `pass_steps` steps: `epoch_steps` when set; one pass with an explicit `epochs` or on a
    dataset as large as MNIST; else a course epoch, ceil(60000 / batch_size)."""
    if options.epoch_steps is not None:
        return options.epoch_steps
    if options.epochs is not None or train_size >= COURSE_TRAIN_SIZE:
        return pass_steps
    return math.ceil(COURSE_TRAIN_SIZE / options.batch_size)


def run_length(options: TrainOptions, epoch_steps: int) -> int:
    """Optimizer steps of the run: `steps`, else `epochs` (or the course's number) epochs."""
    if options.steps is not None:
        return options.steps
    return (options.epochs or options.course_epochs) * epoch_steps


def start_plan(
    options: TrainOptions,
    *,
    dataset: str,
    train_size: int,
    pass_steps: int,
    world_size: int,
    device: str,
    mixed_precision: str,
) -> TrainPlan:
    """The plan of a new run of `options` on `dataset` (its name, `train_size` images, covered in
    `pass_steps` steps), run by `world_size` processes on `device` in `mixed_precision`."""
    epoch_steps = epoch_length(options, train_size, pass_steps)
    total = run_length(options, epoch_steps)
    exponential = options.scheduler and options.lr_schedule == "exponential"
    gamma = COURSE_LR_DECAY ** (1.0 / math.ceil(total / epoch_steps)) if exponential else 1.0
    plan = dict(
        epoch_steps=epoch_steps,
        total_steps=total,
        lr_gamma=gamma,
        lr_decay_steps=total,
        dataset=dataset,
        train_size=train_size,
        world_size=world_size,
        device=device,
        mixed_precision=mixed_precision,
    )
    try:
        return from_json(TrainPlan, plan, "the plan")
    except JSONTypeError as e:
        raise ConfigError(str(e)) from None


# Options a resume may change: the name (its folder's), where and how it runs, and the length
# (which only extends the run; the epoch length and the LR schedule stay as planned: past its old
# end a run keeps decaying at lr_gamma, or stays at the cosine's final rate).
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


def resume_options(stored: TrainOptions, given: dict[str, Any]) -> TrainOptions:
    """The stored options of a run, with the options a resume may change taken from `given`.

    `given` holds only the options the user passed (None values ignored). A new `steps` or
    `epochs` (epochs of the run's own length) sets the length; any other option that differs from
    the stored run raises ConfigError (a resume continues the same training).
    """
    given = {k: v for k, v in given.items() if v is not None}
    changes = {k: given.pop(k) for k in RESUME_RUNTIME if k in given}
    epochs, steps = given.pop("epochs", None), given.pop("steps", None)
    if epochs is not None and steps is not None:
        raise ConfigError("give --steps or --epochs, not both")
    for key, value in given.items():
        if getattr(stored, key) != value:
            raise ConfigError(
                f"run {stored.name!r} was created with {key}={getattr(stored, key)!r}; "
                f"--resume keeps the stored settings (drop that option or use a new --name)"
            )
    if steps is not None:
        changes.update(steps=steps, epochs=None)
    elif epochs is not None:
        changes.update(epochs=epochs, steps=None)
    return validate(replace(stored, **changes))
