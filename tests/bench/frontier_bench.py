"""Each sampler at the quality of the run's default, and what it costs there.

For a run, the run's own sampler and steps (Heun 50 for flow, DDPM 100 for DDPM) and every
sampler that suits the model at each step count of a grid are scored in one process with the same
seeds (training.evaluation's sweep, nothing written to the run). A sampler's row is its fewest
steps at *equal quality*: a Fréchet distance at guidance 1 within `tolerance` of the default's and
a class accuracy at guidance 5 at most `accuracy_margin` below it. Its seconds per 1,000 digits
and NFE are those at guidance 5 (a guidance pair: two evaluations a step); the ratio is the
default's seconds over the sampler's (higher = faster).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.classifier import ClassifierConfig
from training.config import SAMPLERS_BY_KIND
from training.evaluation import plan_sweep, run_sweeps
from training.evaluation_record import EvaluationCell, RunEvaluation
from training.runs import load_run_config

from .quality import run_kind
from .report import Row

SECTION = (
    "fewest steps at the run's default quality (s per 1,000 digits at guidance 5; ratio: the "
    "default's time over the sampler's)"
)
BUNDLED_RUNS = (
    Path("training/pretrained_runs/flow-class-d32"),
    Path("training/pretrained_runs/ddpm-class-d32"),
)


@dataclass(frozen=True)
class FrontierSizes:
    steps: tuple[int, ...] = (4, 8, 16, 25, 32, 50)  # the grid, up to the default's steps
    per_class: int = 50  # 500 digits a cell
    repeats: int = 1
    tolerance: float = 0.1  # Fréchet distance at guidance 1: at most 10% above the default's
    accuracy_margin: float = 0.01  # class accuracy at guidance 5: at most 1 point below


QUICK = FrontierSizes(steps=(4, 8, 16), per_class=10)


def _by(ev: RunEvaluation, sampler: str, steps: int, guidance: float) -> EvaluationCell:
    return next(
        c for c in ev.cells if (c.sampler, c.steps, c.guidance) == (sampler, steps, guidance)
    )


def frontier_rows(
    run: Path,
    sizes: FrontierSizes = FrontierSizes(),
    device: str = "cpu",
    *,
    runs_dir: Path | None = None,
    classifier_config: ClassifierConfig = ClassifierConfig(),
) -> list[Row]:
    """The run's default, then a row per sampler that suits it (see the module docstring)."""
    run_kind(run)  # a class-conditional DDPM or flow run
    cfg = load_run_config(run).options
    default = (cfg.sampler, cfg.sample_steps)
    scales = (1.0, 5.0)
    plans = [plan_sweep(run, [default[0]], [default[1]], scales, device=device)]
    for sampler in SAMPLERS_BY_KIND[cfg.kind]:
        below = [
            n for n in sizes.steps if n < default[1] or (sampler != default[0] and n == default[1])
        ]
        if below:
            plans.append(plan_sweep(run, [sampler], below, scales, device=device))
    results = run_sweeps(
        plans,
        per_class=sizes.per_class,
        repeats=sizes.repeats,
        runs_dir=runs_dir,
        classifier_config=classifier_config,
        write=False,
    )
    ev = RunEvaluation(
        tuple(c for r in results for c in r.evaluation.cells), results[0].evaluation.floors
    )
    base_fd, base = _by(ev, *default, 1.0), _by(ev, *default, 5.0)

    def quality(sampler: str, steps: int) -> str:
        fd, acc = _by(ev, sampler, steps, 1.0), _by(ev, sampler, steps, 5.0)
        return (
            f"Fréchet at guidance 1 {fd.frechet:.1f} ({ev.ratio(fd):.2f}x the floor), "
            f"accuracy at guidance 5 {acc.accuracy:.1%}"
        )

    rows = [
        Row(
            SECTION,
            f"{run.name}: {default[0]} {default[1]} (the run's default), NFE {base.nfe}",
            base.seconds_per_1000,
            "s",
            1.0,
            quality(*default) + f"; {sizes.per_class * 10} digits a cell",
        )
    ]
    for sampler in SAMPLERS_BY_KIND[cfg.kind]:
        tried = sorted({c.steps for c in ev.cells if c.sampler == sampler})
        equal = [
            n
            for n in tried
            if _by(ev, sampler, n, 1.0).frechet <= (1 + sizes.tolerance) * base_fd.frechet
            and _by(ev, sampler, n, 5.0).accuracy >= base.accuracy - sizes.accuracy_margin
        ]
        if not equal:
            best = min(tried, key=lambda n: _by(ev, sampler, n, 1.0).frechet)
            rows.append(
                Row(
                    SECTION,
                    f"{run.name}: {sampler}",
                    None,
                    "s",
                    None,
                    f"not at the default's quality at {', '.join(map(str, tried))} steps; "
                    f"best at {best}: {quality(sampler, best)}",
                )
            )
            continue
        cell = _by(ev, sampler, equal[0], 5.0)
        rows.append(
            Row(
                SECTION,
                f"{run.name}: {sampler} {equal[0]}, NFE {cell.nfe}",
                cell.seconds_per_1000,
                "s",
                base.seconds_per_1000 / cell.seconds_per_1000,
                quality(sampler, equal[0]) + f"; steps tried {', '.join(map(str, tried))}",
            )
        )
    return rows
