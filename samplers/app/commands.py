"""What `python -m samplers` does once its options are parsed (samplers.app.cli): load the
backend and the inputs, run the task (samplers.app.tasks), save its figures and TASK.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import tasks
from .backends import Backend, BackendUnavailable, load_backend
from .devices import check_memory
from .files import atomic_path, write_text_atomic
from .images import figure, load_image, load_mask, save_gif
from .tuning import keep_freed_memory


def make_backend(args: argparse.Namespace) -> Backend:
    if args.backend == "mnist":
        if not args.run:
            raise ValueError("--backend mnist needs --run RUN_DIR (a ddpm-* or flow-* run)")
        options = dict(run_dir=args.run, checkpoint=args.checkpoint, device=args.device or "cpu")
    else:
        if args.run:
            raise ValueError(f"--run is for --backend mnist, not {args.backend}")
        options = dict(
            model=args.model,
            stage2=args.stage2,
            device=args.device,
            cache_dir=args.cache_dir,
            cpu_offload=args.cpu_offload or None,
        )
    backend = load_backend(args.backend, **{k: v for k, v in options.items() if v is not None})
    if args.import_embeds:
        if not hasattr(backend, "import_prompt_embeds"):
            raise ValueError(
                f"--import-embeds needs a text-conditioned backend, not {args.backend}"
            )
        count = len(backend.import_prompt_embeds(args.import_embeds))
        print(f"imported {count} prompt embeddings", file=sys.stderr)
    return backend


def load_inputs(args: argparse.Namespace, backend: Backend, default_count: int):
    """--image files, else the named (default: the first few) built-in examples:
    name -> (1, C, H, W) in [-1, 1]."""
    if args.image:
        images = {}
        for k, path in enumerate(args.image):
            name = Path(path).stem if Path(path).stem not in images else f"{Path(path).stem}-{k}"
            images[name] = load_image(path, backend.image_size, backend.channels).to(backend.device)
    else:
        examples = backend.example_images()
        names = args.examples or list(examples)[:default_count]
        unknown = [n for n in names if n not in examples]
        if unknown:
            raise ValueError(
                f"unknown example(s) {unknown}; this backend has {', '.join(examples)}"
            )
        images = {n: examples[n] for n in names}
    return {n: -x for n, x in images.items()} if args.invert else images


def load_masks(args: argparse.Namespace, backend: Backend) -> list | None:
    """One mask per --image (checked before any image loads), or None for the course's mask."""
    if not args.image:
        if args.mask:
            raise ValueError("--mask goes with --image (one mask per image)")
        return None
    if len(args.mask) != len(args.image):
        raise ValueError(
            f"inpaint needs one --mask per --image: {len(args.image)} images, "
            f"{len(args.mask)} masks"
        )
    return [load_mask(m, backend.image_size) for m in args.mask]


def run_task(args: argparse.Namespace, backend: Backend) -> list[tasks.Figure]:
    """Turn parsed options into one task call."""
    run = dict(generator=tasks.make_generator(args.seed))
    if args.task != "forward":
        run["schedule"] = tasks.backend_schedule(backend, args.stride, args.steps)
    if "n" in args:  # --n images a figure, each kept at every step for the GIF (float32)
        frames = len(run["schedule"].times) + 2
        image = backend.channels * backend.image_size**2 * 4
        check_memory(args.n * frames * image, f"--n {args.n} with its {frames} GIF frames")
    if "sampler" in args:  # the tasks that walk a schedule with the table's samplers
        run["sampler"] = args.sampler
    guided = dict(guidance_scale=args.guidance_scale)
    prompt = args.prompt if args.prompt is not None else backend.default_prompt
    if args.task == "forward":
        return tasks.forward(backend, load_inputs(args, backend, 1), ts=args.ts, **run)
    if args.task == "denoise":
        return tasks.denoise(
            backend,
            load_inputs(args, backend, 1),
            prompt=prompt,
            ts=args.ts,
            i_start=args.i_start,
            kernel_size=args.kernel_size,
            sigma=args.sigma,
            **guided,
            **run,
        )
    if args.task == "sample":
        return tasks.sample(backend, prompt=prompt, n=args.n, **guided, **run)
    if args.task in ("sdedit", "img2img"):
        if args.task == "img2img" and args.prompt is None:
            raise ValueError(
                "img2img needs --prompt (e.g. 'a rocket ship'); sdedit uses the default one"
            )
        return tasks.sdedit(
            backend,
            load_inputs(args, backend, 3),
            prompt=prompt,
            levels=args.levels,
            name=args.task,
            **guided,
            **run,
        )
    if args.task == "inpaint":
        masks = load_masks(args, backend)
        images = load_inputs(args, backend, 3)
        masks = masks or [tasks.default_mask(backend.image_size)] * len(images)
        return tasks.inpaint(
            backend,
            images,
            dict(zip(images, masks, strict=False)),
            prompt=prompt,
            n=args.n,
            jump_length=args.jump_length,
            jump_n_sample=args.jump_n_sample,
            **guided,
            **run,
        )
    if args.task == "anagram":
        views = args.views if len(args.views) == len(args.prompts) else ["identity", *args.views]
        return tasks.anagram(backend, prompts=args.prompts, views=views, n=args.n, **guided, **run)
    if args.task == "hybrid":
        return tasks.hybrid(
            backend,
            far=args.far,
            near=args.near,
            n=args.n,
            kernel_size=args.kernel_size,
            sigma=args.sigma,
            **guided,
            **run,
        )
    stage2 = dict(num_inference_steps=args.upsample_steps, noise_level=args.noise_level)
    return tasks.upsample(
        backend,
        prompts=args.prompts,
        **guided,
        **run,
        **{k: v for k, v in stage2.items() if v is not None},
    )


def save(figures: list[tasks.Figure], out: Path, record: dict) -> list[Path]:
    """Each figure as OUT/NAME.png (+ NAME.gif with frames), and the options as OUT/TASK.json
    (`out` exists)."""
    written = []
    for fig in figures:
        path = out / f"{fig.name}.png"
        with atomic_path(path) as tmp:
            figure(fig.rows, fig.row_labels, fig.col_labels).save(tmp, format="PNG")
        written.append(path)
        if fig.frames:
            written.append(save_gif(fig.frames, out / f"{fig.name}.gif"))
    manifest = out / f"{record['task']}.json"
    record = {**record, "files": [p.name for p in written]}
    write_text_atomic(manifest, json.dumps(record, indent=2, default=str))
    return [*written, manifest]


def run(args: argparse.Namespace) -> int:
    """Run the parsed command: print the written paths and return 0, or print one error line to
    stderr and return 2."""
    keep_freed_memory()
    try:
        args.out.mkdir(parents=True, exist_ok=True)  # an occupied or read-only --out fails now
        backend = make_backend(args)
        if args.task == "denoise" and args.guidance_scale is None:
            args.guidance_scale = tasks.DENOISE_CFG
        args.guidance_scale = tasks.cfg_scale(backend, args.guidance_scale)
        figures = run_task(args, backend)
        record = {k: v for k, v in vars(args).items() if k != "out"}
        record["timesteps"] = list(tasks.backend_schedule(backend, args.stride, args.steps).times)
        for path in save(figures, args.out, record):
            print(path)
    except (ValueError, BackendUnavailable, NotImplementedError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
