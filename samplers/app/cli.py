"""`python -m samplers TASK --backend deepfloyd|mnist --out DIR [options]`: the course's Part A
figures (labelled PNG grids, GIFs of the chains, and TASK.json with the options) for any backend.

    python -m samplers sample --out out/ --seed 180                  # IF-I-L, needs access
    python -m samplers sdedit --backend mnist --run runs/ddpm-class --prompt 3 --out out/
    python -m samplers anagram --model-dir ~/if-tiny/IF-I --stride 90 --out out/ \\
        --prompts "a photo of a dog" "a photo of a man" --views flip

Run `python -m samplers TASK -h` for a task's options. Noise levels follow the course's IF scale
(see samplers/app/tasks.py); errors go to stderr with exit status 2.

Building the parser loads no torch (the course's settings and the sampler table are torch-free),
so `--help` and usage errors answer at once; samplers.app.commands runs the task.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from samplers.course import (
    ANAGRAM_PROMPTS,
    COURSE_SAMPLER,
    HYBRID_KERNEL_SIZE,
    HYBRID_PROMPTS,
    HYBRID_SIGMA,
    NOISE_TS,
    SDEDIT_LEVELS,
)
from samplers.table import sampler_spec, samplers_for

from .arguments import at_most, finite_float, positive_float, positive_int, seed
from .backends import available_backends

MAX_IMAGES = 1000  # --n: images a figure (the course draws 1 to 5); run through the model at once
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
    s.add_argument("--seed", type=seed, default=180, help="seed of the task's one generator")
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


def noise_sampler(name: str) -> str:
    """--sampler: a sampler of the table that walks VP schedules, as every backend's noise
    model needs; a usage error naming the choices otherwise."""
    try:
        return sampler_spec(name, "vp").name
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _sampler() -> argparse.ArgumentParser:
    sampler = argparse.ArgumentParser(add_help=False)
    sampler.add_argument(
        "--sampler",
        type=noise_sampler,
        choices=samplers_for("vp"),
        default=COURSE_SAMPLER,
        help="the sampler that walks the schedule (default: %(default)s, the course's)",
    )
    return sampler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m samplers",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    common, inputs, sampler = _common(), _inputs(), _sampler()

    def add(name: str, help_: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common, *parents])

    p = add(
        "forward",
        "1.1 forward process at course t = " + ", ".join(map(str, NOISE_TS)),
        inputs,
    )
    p.add_argument("--ts", type=int, nargs="+", default=list(NOISE_TS))
    p = add("denoise", "1.2-1.4 blur vs one-step vs iterative denoising", inputs, sampler)
    p.add_argument("--ts", type=int, nargs="+", default=list(NOISE_TS))
    p.add_argument("--i-start", type=int, default=10)
    p.add_argument("--kernel-size", type=positive_int, default=5)
    p.add_argument("--sigma", type=positive_float, default=2.0)
    p = add("sample", "1.5-1.6 samples without and with CFG", sampler)
    p.add_argument("--n", type=at_most(MAX_IMAGES), default=5)
    for name, help_ in (
        ("sdedit", "1.7 SDEdit at course levels i_start"),
        ("img2img", "1.7.3 text-conditioned image-to-image (needs --prompt)"),
    ):
        p = add(name, help_, inputs, sampler)
        p.add_argument("--levels", type=int, nargs="+", default=list(SDEDIT_LEVELS))
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
    p.add_argument("--n", type=at_most(MAX_IMAGES), default=1)
    p.add_argument("--jump-length", type=int, default=0, help="RePaint resampling (course: 0)")
    p.add_argument("--jump-n-sample", type=positive_int, default=1)
    p = add("anagram", "1.8 visual anagrams", sampler)
    p.add_argument("--prompts", nargs="+", default=list(ANAGRAM_PROMPTS))
    p.add_argument(
        "--views",
        nargs="+",
        default=["flip"],
        help="one view per prompt, or one per prompt after the first (identity first)",
    )
    p.add_argument("--n", type=at_most(MAX_IMAGES), default=1)
    p = add("hybrid", "1.9 hybrid images (factorized diffusion)", sampler)
    p.add_argument("--far", default=HYBRID_PROMPTS[0])
    p.add_argument("--near", default=HYBRID_PROMPTS[1])
    p.add_argument("--kernel-size", type=positive_int, default=HYBRID_KERNEL_SIZE)
    p.add_argument("--sigma", type=positive_float, default=HYBRID_SIGMA)
    p.add_argument("--n", type=at_most(MAX_IMAGES), default=1)
    p = add("upsample", "stage-2 super-resolution of CFG samples (IF only)", sampler)
    p.add_argument("--prompts", nargs="+", default=list(UPSAMPLE_PROMPTS))
    p.add_argument("--upsample-steps", type=positive_int, help="stage-2 steps (IF default: 30)")
    p.add_argument("--noise-level", type=int, help="stage-2 noise on its input (IF default: 250)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .commands import run  # torch and the backends load here, after --help and usage errors

    return run(args)
