"""The sampling command a user runs, end to end, against the same work done the unchunked way.

    lab:       python -m training sample RUN --per-class N --guidance-scale 5 --sampler heun \
                   --steps 50
    reference: python -m tests.bench.command_bench RUN N OUT: the same model, sampler, seed and
               batch (500 digits, so 1,000 images a CFG call), in fp32, in one UNet call a step and
               with glibc's default allocator (what `sample` did before LabModel.max_batch,
               samplers.app.tuning.keep_freed_memory and sampling in `--mixed-precision auto`)

Each is a fresh process (start-up and model load included), timed by wall clock, interleaved;
the two .npz files are compared image for image (in a lower precision they differ by rounding;
`evaluate --mixed-precision no` against the default says whether quality moved).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from samplers.app.devices import resolve_mixed_precision

from .report import Row
from .sampling_bench import GUIDANCE

SECTION = (
    "the sampling command, end to end (s; ratio vs one unchunked call on the default allocator)"
)
SAMPLER, STEPS = "heun", 50


def lab_command(run: Path, per_class: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "training",
        "sample",
        str(run),
        "--per-class",
        str(per_class),
        "--guidance-scale",
        f"{GUIDANCE:g}",
        "--sampler",
        SAMPLER,
        "--steps",
        str(STEPS),
        "--out",
        str(out),
    ]


def reference_command(run: Path, per_class: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "tests.bench.command_bench", str(run), str(per_class), str(out)]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def command_rows(run: Path, per_class: int, repeats: int = 1) -> list[Row]:
    """Median wall seconds of the lab's `sample` command and of the reference, and how far their
    images agree (the chunks change float rounding only; bf16 changes more pixels)."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = {k: Path(tmp) / f"{k}.npz" for k in ("lab", "reference")}
        commands = {
            "lab": lab_command(run, per_class, outs["lab"]),
            "reference": reference_command(run, per_class, outs["reference"]),
        }
        seconds: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(repeats):
            for k, command in commands.items():
                seconds[k].append(timed(command))
        a, b = (np.load(outs[k])["images"].astype(int) for k in ("lab", "reference"))
        differing = int((np.abs(a - b) > 1).sum())
    ref, lab = (float(np.median(seconds[k])) for k in ("reference", "lab"))
    n = 10 * per_class
    what = f"{run.name}, {n} digits, {SAMPLER} {STEPS}, guidance {GUIDANCE:g}"
    precision = resolve_mixed_precision("auto", torch.device("cpu"))
    return [
        Row(
            SECTION,
            f"{what}: reference (one call a step, default malloc)",
            ref,
            "s",
            1.0,
            f"{100 * ref / n:.1f} s per 100 digits",
        ),
        Row(
            SECTION,
            f"{what}: python -m training sample ({precision} by --mixed-precision auto)",
            lab,
            "s",
            ref / lab,
            f"{100 * lab / n:.1f} s per 100 digits; {differing} pixels differ by more than 1 "
            f"of 255 from the reference",
        ),
    ]


def _reference(run: str, per_class: int, out: str) -> None:
    """What `sample` did before: fp32, no chunking, glibc's default malloc (keep_freed_memory
    not called)."""
    from training.data import from_signed
    from training.pretrained import load_lab_model

    lab = dataclasses.replace(load_lab_model(run, precision="no"), max_batch=None)
    labels = torch.arange(lab.config.num_classes).repeat_interleave(per_class)
    x = lab.sample(
        labels,
        guidance_scale=GUIDANCE,
        sampler=SAMPLER,
        steps=STEPS,
        generator=torch.Generator().manual_seed(0),
        batch_size=500,
    )
    np.savez_compressed(out, images=from_signed(x)[:, 0].numpy())


if __name__ == "__main__":
    _reference(sys.argv[1], int(sys.argv[2]), sys.argv[3])
