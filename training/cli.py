"""`python -m training <experiment> [options]`, `sample`, `evaluate`, `frontier`, `figures`,
`distill` (docs/api.md).

User errors print one line (`python -m training: error: ...`) and exit with status 2; a run that
fails (NaN/inf loss, a disk that refuses a write) prints one line and exits with status 1, its
summary.json marked "failed" and its last good checkpoint kept.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from samplers.app.arguments import at_most, finite_float, positive_float, positive_int, seed
from samplers.app.devices import AUTO_PRECISION_HELP, DEVICES, PRECISIONS, DeviceUnavailable
from samplers.app.files import atomic_path
from samplers.app.tuning import keep_freed_memory

from .checkpoints import CheckpointError
from .config import (
    DISTILL_METHODS,
    EXPERIMENTS,
    GUIDANCE_SCALES,
    LIMITS,
    LOSS_WEIGHTINGS,
    LR_SCHEDULES,
    NO_SCHEDULER_HELP,
    PER_CLASS,
    RECIPE_HELP,
    RECIPES,
    SAMPLE_BATCH,
    SAMPLE_LIMITS,
    SAMPLERS,
    STUDENT_DEFAULTS,
    TIME_SAMPLINGS,
    WANDB_MODES,
    ConfigError,
    TrainingDiverged,
    TrainOptions,
    default_run_name,
    make_options,
    preview_sampler,
    read_options,
    recipe_defaults,
    resume_options,
)
from .data import DATASETS, DatasetUnavailableError
from .models import ARCHS
from .runs import RunFileError

PROG = "python -m training"


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2
        self.exit(2, f"{PROG}: error: {message}\n")


def _train_options(p: argparse.ArgumentParser, experiment: str) -> None:
    """Options of every experiment; None means "the default of the experiment under --recipe"."""
    add = p.add_argument

    def add_defaulted(flag: str, text: str, **kwargs) -> None:
        """An option whose help ends with its default for this experiment under each recipe
        (the config field named like the flag)."""
        field = flag[2:].replace("-", "_")
        add(flag, help=f"{text} (default {_recipe_values(field, (experiment,))})", **kwargs)

    add(
        "--config",
        type=Path,
        help="read the run's options from a JSON file (an options file the Train page writes, or "
        "a run's config.json); options given beside it override the file's",
    )
    add(
        "--recipe",
        choices=RECIPES,
        help="defaults to start from; explicit options still win: "
        + "; ".join(f"{k}: {v}" for k, v in RECIPE_HELP.items())
        + " (default course)",
    )
    add("--name", help="run folder name under --runs-dir (default: the experiment name)")
    add("--runs-dir", default="runs", help="folder holding the runs (default: runs)")
    add(
        "--resume",
        action="store_true",
        help="continue the run of this name from its last checkpoint",
    )
    add(
        "--epochs",
        type=positive_int,
        help=f"N passes over the dataset (default: the course's "
        f"{recipe_defaults(experiment).course_epochs} epochs of 60,000 images; with --resume, N "
        "epochs of the run)",
    )
    add("--steps", type=positive_int, help="optimizer steps in all (instead of --epochs)")
    add("--dataset", choices=DATASETS, help="mnist, mnist-5k, fashion-mnist or auto (default)")
    add_defaulted("--data-root", "dataset folder")
    add_defaulted("--seed", "seed of the weights, batch order and noise", type=seed)
    add("--device", choices=DEVICES, help="auto (default), cpu, cuda or mps")
    add(
        "--mixed-precision",
        choices=PRECISIONS,
        help=f"auto (default: {AUTO_PRECISION_HELP}), no (fp32), fp16 or bf16",
    )
    add_defaulted("--arch", "the course UNet or the improved one", choices=ARCHS)
    add_defaulted("--hidden", "UNet width D", type=positive_int)
    add_defaulted("--batch-size", "global batch size, split over processes", type=positive_int)
    add_defaulted(
        "--lr", "Adam learning rate, the initial one with the scheduler", type=positive_float
    )
    add("--no-scheduler", action="store_true", help=NO_SCHEDULER_HELP)
    add_defaulted(
        "--lr-schedule",
        "exponential (course: x0.1 over the run, a step per epoch) or "
        "cosine (per step, down to --lr-final-ratio)",
        choices=LR_SCHEDULES,
    )
    add_defaulted("--lr-final-ratio", "cosine: last learning rate / --lr", type=positive_float)
    add_defaulted(
        "--warmup-steps", "linear learning-rate warm-up steps, cosine or constant rate", type=int
    )
    add_defaulted(
        "--time-sampling",
        "density of the flow time or DDPM step (logit-normal: more mid-noise draws)",
        choices=TIME_SAMPLINGS,
    )
    add_defaulted(
        "--loss-weighting",
        "DDPM: weight each step's noise loss: none (the course), "
        "min-snr (min(SNR, G) / SNR: low noise counts less) or flow (flow matching's "
        "(1 + SNR^-1/2)^2: high noise counts more)",
        choices=LOSS_WEIGHTINGS,
    )
    add_defaulted("--min-snr-gamma", "G of --loss-weighting min-snr", type=positive_float)
    add(
        "--ema-decay",
        type=positive_float,
        help="keep an EMA of the weights for sampling, its decay "
        "capped at this value D (e.g. 0.999); the --ema-warmup term is lower, and sets it, until "
        "step (D W - 1) / (1 - D): 8,990 for D = 0.999, W = 10",
    )
    add_defaulted(
        "--ema-warmup",
        "EMA warm-up: step n's decay is min(decay, (1 + n) / (W + n)), "
        "so the EMA spans about the last n / (W - 1) steps",
        type=positive_float,
    )
    add_defaulted("--p-uncond", "class dropout probability", type=finite_float)
    add_defaulted("--sigma", "single-step denoiser noise level", type=positive_float)
    add_defaulted(
        "--sampler", "the run's default sampler (sample, evaluate, figures)", choices=SAMPLERS
    )
    add_defaulted("--sample-steps", "sampler steps", type=positive_int)
    preview, preview_steps = preview_sampler(recipe_defaults(experiment))
    add(
        "--preview-sampler",
        choices=SAMPLERS,
        help=f"sampler of the per-epoch grids and the GIF (default {preview})",
    )
    add("--preview-steps", type=positive_int, help=f"its steps (default {preview_steps})")
    add_defaulted("--guidance-scale", "CFG scale of the class grids", type=finite_float)
    add_defaulted("--log-every", "steps between logged metrics", type=positive_int)
    add_defaulted("--checkpoint-every", "epochs between checkpoints", type=positive_int)
    add_defaulted(
        "--keep-checkpoints",
        "recent checkpoints kept besides the milestone epochs "
        f"{','.join(map(str, TrainOptions.milestones))}",
        type=positive_int,
    )
    add(
        "--wandb-mode",
        choices=WANDB_MODES,
        help="default: online when a W&B key is configured, else offline",
    )
    add_defaulted("--wandb-project", "W&B project")
    add("--epoch-steps", type=positive_int, help=argparse.SUPPRESS)  # tests: steps of an epoch
    add("--stop-after", type=positive_int, help=argparse.SUPPRESS)  # tests: after N epochs, killed


def _recipe_values(field: str, experiments: Sequence[str] = ("ddpm-class", "flow-class")) -> str:
    """What each recipe sets `field` to, for help texts: "course: 300; fast: ddpm-class 100,
    flow-class 50", one value where experiments (or recipes) agree."""

    def values(recipe: str) -> str:
        by_experiment = {e: getattr(recipe_defaults(e, recipe), field) for e in experiments}
        if len(set(by_experiment.values())) == 1:
            return str(next(iter(by_experiment.values())))
        return ", ".join(f"{e} {v}" for e, v in by_experiment.items())

    by_recipe = {recipe: values(recipe) for recipe in RECIPES}
    if len(set(by_recipe.values())) == 1:
        return next(iter(by_recipe.values()))
    return "; ".join(f"{recipe}: {v}" for recipe, v in by_recipe.items())


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Train, sample and evaluate the Part B MNIST models.")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for name, defaults in EXPERIMENTS.items():
        p = sub.add_parser(
            name,
            help=f"train {name} ({defaults.kind}, D={defaults.hidden}, batch "
            f"{defaults.batch_size}, lr {defaults.lr:g}, {defaults.course_epochs} epochs)",
        )
        _train_options(p, name)
    s = sub.add_parser("sample", help="write samples of a run to an .npz (images uint8, labels)")
    s.add_argument("run_dir", type=Path)
    s.add_argument(
        "--per-class",
        type=at_most(SAMPLE_LIMITS["per_class"]),
        default=10,
        help="images per class (default 10)",
    )
    s.add_argument("--guidance-scale", type=finite_float, help="CFG scale (default: the run's, 5)")
    s.add_argument(
        "--sampler", choices=SAMPLERS, help=f"default: the run's own ({_recipe_values('sampler')})"
    )
    s.add_argument(
        "--steps",
        type=at_most(LIMITS["sample_steps"]),
        help=f"sampler steps (default: the run's own; {_recipe_values('sample_steps')})",
    )
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument("--checkpoint", help="checkpoint epoch or folder name (default: latest)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    s.add_argument(
        "--batch",
        type=at_most(SAMPLE_LIMITS["batch"]),
        default=SAMPLE_BATCH,
        help=f"images per model batch (default {SAMPLE_BATCH})",
    )
    e = sub.add_parser(
        "evaluate",
        help="class accuracy and Frechet distance of runs' samples, per sampler x steps x "
        "guidance, with NFE and seconds per 1,000 digits",
    )
    for p in (s, e):
        p.add_argument(
            "--mixed-precision",
            choices=PRECISIONS,
            default="auto",
            help=f"the UNet's precision: auto (default: {AUTO_PRECISION_HELP}), "
            "no (fp32), fp16 or bf16",
        )
    s.add_argument(
        "--out", type=Path, required=True, help="output .npz file (.npz is added when missing)"
    )
    e.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="runs to score")
    e.add_argument(
        "--guidance",
        type=finite_float,
        nargs="+",
        default=list(GUIDANCE_SCALES),
        help=f"guidance scales of class models (default {' '.join(map(str, GUIDANCE_SCALES))})",
    )
    e.add_argument(
        "--per-class",
        type=at_most(SAMPLE_LIMITS["per_class"]),
        default=PER_CLASS,
        help=f"samples a class (default {PER_CLASS})",
    )
    e.add_argument(
        "--sampler",
        choices=SAMPLERS,
        nargs="+",
        help="samplers to compare (default: the run's own, as for sample); one that does not "
        "suit a run's model is left out with the reason printed, and refused when none suits",
    )
    e.add_argument(
        "--steps",
        type=at_most(LIMITS["sample_steps"]),
        nargs="+",
        help="step counts of each sampler (default: the run's own, as for sample)",
    )
    e.add_argument("--seed", type=seed, default=0)
    e.add_argument(
        "--repeats",
        type=at_most(SAMPLE_LIMITS["repeats"]),
        default=1,
        help="sample sets a cell, drawn as --seed S, S+1, ... would; scores are their "
        "mean (default 1; one set of 500 digits varies by about 15%%)",
    )
    e.add_argument("--checkpoint")
    e.add_argument("--device", default="cpu", help="as for sample")
    fr = sub.add_parser(
        "frontier",
        help="plot runs' stored evaluations: Frechet distance and class accuracy against NFE",
    )
    fr.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="evaluated runs")
    fr.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    fr.add_argument(
        "--guidance",
        type=finite_float,
        nargs="+",
        help="only these guidance scales (default: every one evaluated)",
    )
    fr.add_argument(
        "--per-class",
        type=positive_int,
        help="only results of this many samples a class (default: all)",
    )
    d = sub.add_parser(
        "distill",
        help="train a few-step student of a class-conditional flow or DDPM run "
        "(docs/distillation.md)",
    )
    d.add_argument("teacher", type=Path, metavar="TEACHER_RUN", help="the teacher's run folder")
    d.add_argument(
        "--method", choices=DISTILL_METHODS, default="flowmap", help="flowmap (the only one)"
    )
    d.add_argument(
        "--steps",
        type=positive_int,
        help=f"optimizer steps (default {STUDENT_DEFAULTS['steps']}; with --resume, a longer run)",
    )
    d.add_argument(
        "--sample-steps",
        type=positive_int,
        help=f"the student's default sampling steps (default {STUDENT_DEFAULTS['sample_steps']})",
    )
    d.add_argument(
        "--trajectories",
        type=positive_int,
        help="teacher trajectories to regress on (default 4096)",
    )
    d.add_argument("--name", help="the student's run folder (default: TEACHER's name + -student)")
    d.add_argument("--runs-dir", type=Path, default=Path("runs"), help="default: runs")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", choices=DEVICES, default="auto")
    d.add_argument("--wandb-mode", choices=WANDB_MODES)
    d.add_argument("--resume", action="store_true", help="continue the student run --name")
    d.add_argument(
        "--config",
        type=Path,
        help="the student's options from a file (the Train page writes one): TEACHER_RUN must "
        "be its teacher, and the other options are the file's",
    )
    d.add_argument("--stop-after", type=positive_int, help=argparse.SUPPRESS)
    f = sub.add_parser("figures", help="(re)make the course deliverables into RUN_DIR/figures")
    f.add_argument("run_dir", type=Path)
    f.add_argument(
        "--steps", type=at_most(LIMITS["sample_steps"]), help="sampler steps (default: the run's)"
    )
    f.add_argument("--seed", type=seed, default=0)
    f.add_argument("--device")
    return parser


_NOT_OPTIONS = ("command", "runs_dir", "resume", "stop_after", "no_scheduler", "recipe", "config")


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The run's options: the experiment's defaults under --recipe (or the --config file's) with
    the options given; with --resume, the stored run's options with the changes a resume allows."""
    from .runs import load_run_config, safe_run_dir

    given = {k: v for k, v in vars(args).items() if k not in _NOT_OPTIONS and v is not None}
    if not args.resume:
        base = read_options(args.config) if args.config else None
        return make_options(
            args.command, recipe=args.recipe, no_scheduler=args.no_scheduler, base=base, **given
        )
    if args.config:
        raise ConfigError("--resume continues a run with its stored options: drop --config")
    name = args.name or default_run_name(args.command, args.no_scheduler)
    try:
        stored = load_run_config(safe_run_dir(args.runs_dir, name))
    except FileNotFoundError:
        raise ConfigError(f"--resume: there is no run {name!r} in {args.runs_dir}") from None
    given.update(experiment=args.command, name=name, recipe=args.recipe)
    if args.no_scheduler:
        given["scheduler"] = False
    return resume_options(stored.options, given)


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train

    options = options_from_args(args)
    return _run(train, options, args, f"{options.experiment} --runs-dir {args.runs_dir}")


def cmd_distill(args: argparse.Namespace) -> int:
    from .distill import distill, student_options
    from .runs import load_run_config, safe_run_dir

    if args.config:
        if args.resume:
            raise ConfigError("--resume continues a run with its stored options: drop --config")
        options = read_options(args.config)
        if options.distill is None or Path(options.distill.teacher) != args.teacher:
            raise ConfigError(f"{args.config}: not the options of a student of {args.teacher}")
    elif not args.resume:
        options = student_options(
            args.teacher,
            method=args.method,
            steps=args.steps,
            name=args.name,
            sample_steps=args.sample_steps,
            trajectories=args.trajectories,
            seed=args.seed,
            device=args.device,
            wandb_mode=args.wandb_mode,
        )
    else:
        if not args.name:
            raise ConfigError("--resume continues the student run --name NAME: give its name")
        try:
            stored = load_run_config(safe_run_dir(args.runs_dir, args.name)).options
        except FileNotFoundError:
            raise ConfigError(
                f"--resume: there is no run {args.name!r} in {args.runs_dir}"
            ) from None
        if stored.distill is None:
            raise ConfigError(f"--resume: run {args.name!r} is not a distilled student")
        given = dict(steps=args.steps, wandb_mode=args.wandb_mode, name=args.name)
        options = resume_options(stored, given)
    again = f"distill {args.teacher} --runs-dir {args.runs_dir}"
    return _run(distill, options, args, again)


def _run(train, options: TrainOptions, args: argparse.Namespace, again: str) -> int:
    """train(options, runs_dir, resume, stop_after) with SIGTERM / Ctrl-C stopping it cleanly,
    then one line: where it finished, or the command that continues it (`again` + --resume)."""
    from accelerate import PartialState

    from .trainer import STOP, interrupt, request_stop

    STOP.clear()
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {signal.SIGTERM: request_stop, signal.SIGINT: interrupt}  # stop cleanly
    previous = {s: signal.signal(s, h) for s, h in handlers.items()} if main_thread else {}
    try:
        run_dir = train(options, args.runs_dir, resume=args.resume, stop_after=args.stop_after)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    from .runs import read_summary

    s = read_summary(run_dir)
    if s.get("status") == "finished" and PartialState().is_main_process:
        print(
            f"{options.name}: finished at step {s.get('step')} (epoch {s.get('epoch')}), "
            f"loss {s.get('final_loss', float('nan')):.4f}, {s.get('wall_time_s')} s -> {run_dir}"
        )
    elif s.get("status") == "stopped" and PartialState().is_main_process:
        print(
            f"{options.name}: stopped at step {s.get('step')}; continue it with: {PROG} "
            f"{again} --name {options.name} --resume"
        )
    return 0


def output_file(path: Path, suffix: str) -> Path:
    """--out `path`, `suffix` added when missing, its folder made; ConfigError, before any work,
    when it names a folder or a place that cannot be written."""
    if path.name in ("", ".", "..") or path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give the {suffix} file to write")
    out = path if path.suffix == suffix else path.with_name(path.name + suffix)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the {suffix} file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot make its folder ({e.strerror or e})") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: its folder {out.parent} is not writable")
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .data import from_signed
    from .pretrained import load_lab_model

    out = output_file(args.out, ".npz")
    lab = load_lab_model(args.run_dir, args.checkpoint, args.device, args.mixed_precision)
    labels = torch.arange(lab.config.num_classes).repeat_interleave(args.per_class)
    if not lab.class_conditional:
        labels = torch.full_like(labels, -1)
    sampler = args.sampler or lab.config.sampler
    steps = args.steps or lab.config.sample_steps
    g = torch.Generator(lab.device).manual_seed(args.seed)
    x = lab.sample(
        labels,
        guidance_scale=args.guidance_scale,
        sampler=sampler,
        steps=steps,
        generator=g,
        batch_size=args.batch,
    )
    images = from_signed(x)[:, 0].cpu().numpy()
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            images=images,
            labels=labels.numpy().astype(np.int64),
            sampler=sampler,
            steps=steps,
            precision=lab.precision,
            seed=args.seed,
            batch=args.batch,
            guidance_scale=args.guidance_scale
            if args.guidance_scale is not None
            else lab.config.guidance_scale,
        )
    print(
        f"wrote {len(images)} images ({lab.kind}, {lab.checkpoint.name}, {sampler} {steps}, "
        f"{lab.precision}) to {out}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluation import format_evaluation, plan_sweep, run_sweeps

    plans = []
    for run_dir in args.run_dirs:
        try:
            plans.append(
                plan_sweep(
                    run_dir,
                    args.sampler or (),
                    args.steps or (),
                    args.guidance,
                    checkpoint=args.checkpoint,
                    device=args.device,
                    precision=args.mixed_precision,
                )
            )
        except ConfigError as e:
            if len(args.run_dirs) == 1:
                raise
            raise ConfigError(f"{run_dir}: {e}") from None
    bar = None

    def progress(i: int, total: int, label: str) -> None:  # a bar from the first cell on
        nonlocal bar
        bar = bar or tqdm(total=total, unit="cell", dynamic_ncols=True)
        bar.set_description(label, refresh=False)
        bar.update(i - bar.n)

    try:
        results = run_sweeps(
            plans,
            per_class=args.per_class,
            seed=args.seed,
            repeats=args.repeats,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    print(format_evaluation(results))
    return 0


def cmd_frontier(args: argparse.Namespace) -> int:
    from .evaluation_record import read_evaluation
    from .frontier import write_frontier_png
    from .runs import load_run_config

    evaluations = {}
    for run_dir in args.run_dirs:
        load_run_config(run_dir)  # a run folder, or one line saying why not
        ev = read_evaluation(run_dir)
        for problem in ev.problems:
            print(f"warning: left out: {problem}", file=sys.stderr)
        evaluations[run_dir.name if run_dir.name not in evaluations else str(run_dir)] = ev
    out = output_file(args.out, ".png")
    cells = write_frontier_png(evaluations, out, guidance=args.guidance, per_class=args.per_class)
    print(f"wrote {out}: {cells} results of {len(evaluations)} runs")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .figures import make_figures

    paths = make_figures(args.run_dir, device=args.device, seed=args.seed, steps=args.steps)
    print(f"wrote {len(paths)} figures to {Path(args.run_dir) / 'figures'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {
        "sample": cmd_sample,
        "evaluate": cmd_evaluate,
        "frontier": cmd_frontier,
        "figures": cmd_figures,
        "distill": cmd_distill,
    }.get(args.command, cmd_train)
    try:
        return command(args)
    except (
        ConfigError,
        CheckpointError,
        FileNotFoundError,
        DatasetUnavailableError,
        DeviceUnavailable,
        RunFileError,
    ) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except (TrainingDiverged, OSError) as e:  # OSError: a failed write (disk full, read-only)
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
