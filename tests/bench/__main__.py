"""`python -m tests.bench [--quick] [--run RUN_DIR ...] [--time-to-quality] [--out FILE]`.

Prints the table and writes it as JSON (default test-artifacts/bench/latest.json).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from samplers.app.devices import resolve_mixed_precision
from samplers.app.tuning import keep_freed_memory
from training.config import RECIPES

from .command_bench import command_rows
from .deepfloyd_bench import IFSizes, deepfloyd_rows
from .fastpath import FastPath
from .frontier_bench import BUNDLED_RUNS, QUICK, FrontierSizes, frontier_rows
from .peak import gemm_peak, native_bf16
from .quality import TTQSettings, quality_rows, run_kind, time_to_quality
from .report import DEFAULT_OUT, Row, format_table, write_json
from .sampling_bench import SampleSizes, sampling_rows
from .student_bench import BUNDLED_STUDENTS, StudentSizes, student_rows
from .training_bench import TrainSizes, preview_share_rows, training_rows

SECTIONS = (
    "peak",
    "training",
    "preview",
    "sampling",
    "command",
    "quality",
    "frontier",
    "students",
    "deepfloyd",
)
COMMAND_RUN = Path("training/pretrained_runs/flow-class-d32")  # the bundled run the command samples
PEAK_N = 2048  # GEMM size of the peak rows
PEAK = "machine peak (GFLOP/s)"


@dataclass(frozen=True)
class Plan:
    """Sizes and fast-path variants of one benchmark mode."""

    train: TrainSizes
    sample: SampleSizes
    deepfloyd: IFSizes
    train_variants: tuple[FastPath, ...]
    bare_variants: tuple[FastPath, ...]
    sample_variants: tuple[FastPath, ...]


def plan(quick: bool, device: torch.device) -> Plan:
    """Quick: fewer repeats and variants (~5 min on 2 idle cores); full adds compile and the
    one-thread variants without channels_last. The `fold_bn` sampling variant is the lab's own
    path (load_lab_model: BatchNorm folded, channels_last, the precision `auto` picks)."""
    cuda = device.type == "cuda"
    one = (1,) if device.type == "cpu" and (os.cpu_count() or 1) > 1 else ()
    bf16 = (
        (FastPath(bf16=True), FastPath(bf16=True, channels_last=True))
        if native_bf16(device)
        else ()
    )
    fast = FastPath(bf16=True, channels_last=True) if bf16 else FastPath(channels_last=True)
    fused = FastPath(bf16=fast.bf16, channels_last=True, fused_adam=True)
    train = [
        FastPath(),
        FastPath(channels_last=True),
        *[FastPath(threads=n) for n in one],
        *[FastPath(channels_last=True, threads=n) for n in one],
        *bf16,
        fused,
    ]
    # on a GPU the bare step also as one CUDA graph: the cost of launching kernels from Python
    bare = (fast, fused, replace(fused, cuda_graph=True)) if cuda else (fast,)
    sample = [
        FastPath(),
        FastPath(channels_last=True, inference_mode=True),
        *[FastPath(threads=n) for n in one],
        *[FastPath(channels_last=True, inference_mode=True, threads=n) for n in one],
        *[FastPath(bf16=True, channels_last=True, inference_mode=True) for _ in bf16[:1]],
        FastPath(
            bf16=resolve_mixed_precision("auto", device) == "bf16",
            channels_last=True,
            inference_mode=True,
            fold_bn=True,
        ),
    ]
    if quick:  # a GPU step takes milliseconds: time 20 of them a unit there
        train_sizes = TrainSizes(steps=20, repeats=3) if cuda else TrainSizes(steps=1, repeats=2)
        return Plan(
            train_sizes,
            SampleSizes(steps=1, repeats=3),
            IFSizes(steps=1, repeats=2),
            (train[0], fast),
            bare,
            tuple(v for v in sample if v.threads is None or v.channels_last),
        )
    train.append(FastPath(bf16=fast.bf16, channels_last=True, compile=True))
    sample.append(FastPath(channels_last=True, inference_mode=True, compile=True))
    return Plan(
        TrainSizes(), SampleSizes(steps=3, repeats=4), IFSizes(), tuple(train), bare, tuple(sample)
    )


def bf16_probe(device: torch.device, repeats: int) -> Row:
    """bf16 autocast against fp32 on a course UNet forward (batch 8): the bf16 verdict here."""
    from training.models import UNet

    from .timing import interleaved

    net = UNet(conditioning="class").to(device).eval()
    x, t, c = (
        torch.randn(8, 1, 28, 28, device=device),
        torch.rand(8, device=device),
        torch.zeros(8, 10, device=device),
    )

    def run(bf16: bool):
        def call() -> None:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                net(x, t, c).sum().item()

        return call

    r = interleaved({"fp32": run(False), "bf16": run(True)}, repeats=repeats)
    speedup = r["fp32"].median / r["bf16"].median
    return Row(
        PEAK,
        "bf16 autocast UNet forward (batch 8) vs fp32",
        r["bf16"].median,
        "s",
        speedup,
        f"native bf16 kernels: {native_bf16(device)}",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a few minutes: fewer repeats and variants")
    p.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="a trained ddpm-class or flow-class run: its weights for sampling, plus quality "
        "rows; the frontier rows' runs (default: the bundled flow-class-d32, ddpm-class-d32)",
    )
    p.add_argument(
        "--quality-per-class", type=int, default=10, help="digits a class for quality rows"
    )
    p.add_argument(
        "--time-to-quality",
        action="store_true",
        help="only the time-to-quality measurement: train --ttq-experiment on mnist-5k "
        "(hours with the course recipe, minutes with --recipe fast)",
    )
    p.add_argument(
        "--ttq-max-minutes",
        type=float,
        default=None,
        help="give up after this long (default: 240; 15 with --recipe fast)",
    )
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        default="course",
        help="training recipe of --time-to-quality (fast: scored every 200 steps)",
    )
    p.add_argument(
        "--ttq-experiment",
        choices=("flow-class", "ddpm-class"),
        default="flow-class",
        help="the experiment --time-to-quality trains (default: flow-class)",
    )
    p.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    keep_freed_memory()  # as the lab's commands do
    device, start = torch.device(args.device), time.time()
    sections = [s for s in args.sections.split(",") if s]
    if unknown := set(sections) - set(SECTIONS):
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    rows: list[Row] = []
    if args.time_to_quality:
        fast = args.recipe == "fast"
        minutes = args.ttq_max_minutes or (15.0 if fast else 240.0)
        rows += time_to_quality(
            Path("test-artifacts/bench/runs"),
            TTQSettings(
                experiment=args.ttq_experiment,
                recipe=args.recipe,
                epoch_steps=200 if fast else None,
                max_minutes=minutes,
                device=args.device,
            ),
        )
        settings: dict = {"mode": "time-to-quality", "recipe": args.recipe}
    else:
        pl = plan(args.quick, device)
        settings = {
            "mode": "quick" if args.quick else "full",
            **{k: v for k, v in asdict(pl).items()},
        }
        peak: dict = {}
        if "peak" in sections:
            gemm = gemm_peak(device, n=PEAK_N)
            rows += [
                Row(PEAK, f"GEMM {PEAK_N}^3 by {path}, {k}", v, "GFLOP/s")
                for path, by_dtype in gemm.items()
                for k, v in by_dtype.items()
            ]
            peak = {k: max(by_dtype[k] for by_dtype in gemm.values()) for k in ("fp32", "bf16")}
            rows += [
                Row(PEAK, f"peak {k} (the faster way; the % columns below)", v, "GFLOP/s")
                for k, v in peak.items()
            ]
            rows.append(bf16_probe(device, repeats=2 if args.quick else 3))
        if "training" in sections:
            rows += training_rows(
                pl.train, device, pl.train_variants, peaks=peak, bare=pl.bare_variants
            )
        if "preview" in sections:
            rows += preview_share_rows(device)
        if "sampling" in sections:
            runs = {"ddpm": None, "flow": None} | {run_kind(r): r for r in args.run}
            rows += sampling_rows(runs, pl.sample, device, pl.sample_variants)
        if "command" in sections:
            rows += command_rows(COMMAND_RUN, per_class=10 if args.quick else 50)
        if "quality" in sections:
            if args.run:
                rows += quality_rows(args.run, args.quality_per_class, args.device)
            else:
                print(
                    "quality rows skipped: pass --run RUN_DIR "
                    "(a trained ddpm-class / flow-class run)"
                )
        if "frontier" in sections:
            for run in args.run or BUNDLED_RUNS:
                rows += frontier_rows(run, QUICK if args.quick else FrontierSizes(), args.device)
        if "students" in sections:
            sizes = StudentSizes(per_class=10) if args.quick else StudentSizes()
            for student in BUNDLED_STUDENTS:
                rows += student_rows(student, sizes, args.device)
        if "deepfloyd" in sections:
            rows += deepfloyd_rows(pl.deepfloyd)
    print(format_table(rows))
    path = write_json(rows, args.out, settings={**settings, "seconds": round(time.time() - start)})
    print(f"\nwrote {path} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
