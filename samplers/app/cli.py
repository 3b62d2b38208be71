"""`python -m samplers TASK --backend deepfloyd|mnist --out DIR [options]`: the course's Part A
figures (labelled PNG grids, GIFs of the chains, and TASK.json with the options) for any backend.

    python -m samplers sample --out out/ --seed 180                  # IF-I-L, needs access
    python -m samplers sdedit --backend mnist --run runs/ddpm-class --prompt 3 --out out/
    python -m samplers anagram --model-dir ~/if-tiny/IF-I --stride 90 --out out/ \\
        --prompts "a photo of a dog" "a photo of a man" --views flip

Run `python -m samplers TASK -h` for a task's options. Noise levels follow the course's IF scale
(see samplers/app/tasks.py); errors go to stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import tasks
from .arguments import finite_float, positive_float, positive_int
from .backends import Backend, BackendUnavailable, available_backends, load_backend
from .files import atomic_path, write_text_atomic
from .images import figure, load_image, load_mask, save_gif
from .tuning import keep_freed_memory

UPSAMPLE_PROMPTS = (
    "an oil painting of a snowy mountain village",
    "a man wearing a hat",
    "a rocket ship",
)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    b = common.add_argument_group("backend")
    b.add_argument("--backend", choices=available_backends(), default="deepfloyd")
    b.add_argument(
        "--model",
        "--model-dir",
        dest="model",
        help="deepfloyd stage 1: XL, L, M, a hub id or a local folder (default: IF-I-L)",
    )
    b.add_argument(
        "--stage2",
        "--stage2-dir",
        dest="stage2",
        help="deepfloyd stage 2: a hub id or a local folder (default: IF-II-L)",
    )
    b.add_argument("--run", help="mnist: the run directory (a ddpm-* or flow-* run)")
    b.add_argument("--checkpoint", help="mnist: epoch or checkpoint folder (default: latest)")
    b.add_argument(
        "--device", help="cpu, cuda, mps (default: cpu for mnist, the best available for deepfloyd)"
    )
    b.add_argument(
        "--cpu-offload", action="store_true", help="deepfloyd: keep models on the CPU until used"
    )
    b.add_argument("--cache-dir", help="deepfloyd: prompt-embedding cache root")
    b.add_argument(
        "--import-embeds",
        metavar="PTH",
        help="deepfloyd: add the course's prompt_embeds_dict.pth to the cache first",
    )
    s = common.add_argument_group("sampling")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=int, default=180, help="seed of the task's one generator")
    steps = s.add_mutually_exclusive_group()
    steps.add_argument(
        "--stride", type=positive_int, help="strided schedule from the first timestep to 0 (IF: 30)"
    )
    steps.add_argument(
        "--steps", type=positive_int, help="this many evenly spaced timesteps instead"
    )
    s.add_argument(
        "--guidance-scale",
        type=finite_float,
        help="CFG scale (default: the backend's, IF 7 as in the course, MNIST the "
        "run's; denoise: 1, no CFG, as in the course)",
    )
    s.add_argument("--prompt", help="the condition (default: IF 'a high quality photo', MNIST '')")
    return common


def _inputs() -> argparse.ArgumentParser:
    inputs = argparse.ArgumentParser(add_help=False)
    g = inputs.add_argument_group("input images (default: built-in examples)")
    which = g.add_mutually_exclusive_group()
    which.add_argument(
        "--image", nargs="+", default=[], help="image files (any format, size, mode)"
    )
    which.add_argument("--examples", nargs="+", help="names of built-in examples to use")
    g.add_argument(
        "--invert",
        action="store_true",
        help="negate input images (dark-on-light drawings for MNIST)",
    )
    return inputs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m samplers",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    common, inputs = _common(), _inputs()

    def add(name: str, help_: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common, *parents])

    p = add(
        "forward",
        "1.1 forward process at course t = " + ", ".join(map(str, tasks.NOISE_TS)),
        inputs,
    )
    p.add_argument("--ts", type=int, nargs="+", default=list(tasks.NOISE_TS))
    p = add("denoise", "1.2-1.4 blur vs one-step vs iterative denoising", inputs)
    p.add_argument("--ts", type=int, nargs="+", default=list(tasks.NOISE_TS))
    p.add_argument("--i-start", type=int, default=10)
    p.add_argument("--kernel-size", type=positive_int, default=5)
    p.add_argument("--sigma", type=positive_float, default=2.0)
    p = add("sample", "1.5-1.6 samples without and with CFG")
    p.add_argument("--n", type=positive_int, default=5)
    for name, help_ in (
        ("sdedit", "1.7 SDEdit at course levels i_start"),
        ("img2img", "1.7.3 text-conditioned image-to-image (needs --prompt)"),
    ):
        p = add(name, help_, inputs)
        p.add_argument("--levels", type=int, nargs="+", default=list(tasks.SDEDIT_LEVELS))
    p = add(
        "inpaint",
        "1.7.2 inpainting: --image with --mask, or built-ins with the course's mask",
        inputs,
    )
    p.add_argument(
        "--mask",
        nargs="+",
        default=[],
        help="one mask per --image: white or painted pixels are regenerated",
    )
    p.add_argument("--n", type=positive_int, default=1)
    p.add_argument("--jump-length", type=int, default=0, help="RePaint resampling (course: 0)")
    p.add_argument("--jump-n-sample", type=positive_int, default=1)
    p = add("anagram", "1.8 visual anagrams")
    p.add_argument("--prompts", nargs="+", default=list(tasks.ANAGRAM_PROMPTS))
    p.add_argument(
        "--views",
        nargs="+",
        default=["flip"],
        help="one view per prompt, or one per prompt after the first (identity first)",
    )
    p.add_argument("--n", type=positive_int, default=1)
    p = add("hybrid", "1.9 hybrid images (factorized diffusion)")
    p.add_argument("--far", default=tasks.HYBRID_PROMPTS[0])
    p.add_argument("--near", default=tasks.HYBRID_PROMPTS[1])
    p.add_argument("--kernel-size", type=positive_int, default=tasks.HYBRID_KERNEL_SIZE)
    p.add_argument("--sigma", type=positive_float, default=tasks.HYBRID_SIGMA)
    p.add_argument("--n", type=positive_int, default=1)
    p = add("upsample", "stage-2 super-resolution of CFG samples (IF only)")
    p.add_argument("--prompts", nargs="+", default=list(UPSAMPLE_PROMPTS))
    p.add_argument("--upsample-steps", type=positive_int, help="stage-2 steps (IF default: 30)")
    p.add_argument("--noise-level", type=int, help="stage-2 noise on its input (IF default: 250)")
    return parser


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


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
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
