"""A distilled student against its teacher's default, in one process with the same seeds.

For a student run, its teacher's own sampler and steps (Heun 50, DDPM 100) and the student's
flowmap at 1, 2 and 4 steps are scored at guidance 1 and 5 (training.evaluation's sweep, nothing
written to either run). Each row: seconds per 1,000 digits at guidance 5 and its NFE (the
teacher's CFG pair counts 2, the student's one call 1); the ratio is the teacher's seconds over
the row's (higher = faster); the note gives the quality at both scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.classifier import ClassifierConfig
from training.evaluation import plan_sweep, run_sweeps
from training.evaluation_record import RunEvaluation
from training.runs import load_run_config

from .report import Row

SECTION = (
    "distilled students against their teacher's default (s per 1,000 digits at guidance 5; "
    "ratio: the teacher's time over the row's)"
)
BUNDLED_STUDENTS = (
    Path("training/pretrained_runs/flow-class-d32-student"),
    Path("training/pretrained_runs/ddpm-class-d32-student"),
)


@dataclass(frozen=True)
class StudentSizes:
    steps: tuple[int, ...] = (1, 2, 4)
    per_class: int = 100  # 1,000 digits a cell


def student_rows(
    student: Path,
    sizes: StudentSizes = StudentSizes(),
    device: str = "cpu",
    *,
    runs_dir: Path | None = None,
    classifier_config: ClassifierConfig = ClassifierConfig(),
) -> list[Row]:
    """The teacher's default, then the student at each of sizes.steps (module docstring)."""
    distill = load_run_config(student).options.distill
    if distill is None:
        raise ValueError(f"{student} is not a distilled student")
    teacher = Path(distill.teacher)
    own = load_run_config(teacher).options
    scales = (1.0, 5.0)
    plans = [
        plan_sweep(teacher, [own.sampler], [own.sample_steps], scales, device=device),
        plan_sweep(student, ["flowmap"], sizes.steps, scales, device=device),
    ]
    results = run_sweeps(
        plans,
        per_class=sizes.per_class,
        runs_dir=runs_dir,
        classifier_config=classifier_config,
        write=False,
    )
    rows: list[Row] = []
    base = None
    for result, name in zip(results, (teacher.name, student.name), strict=True):
        ev: RunEvaluation = result.evaluation
        for steps in sorted({c.steps for c in ev.cells}):
            g1, g5 = (
                next(c for c in ev.cells if (c.steps, c.guidance) == (steps, g)) for g in scales
            )
            base = base or g5.seconds_per_1000
            rows.append(
                Row(
                    SECTION,
                    f"{name}: {g5.sampler} {steps}, NFE {g5.nfe}",
                    g5.seconds_per_1000,
                    "s",
                    base / g5.seconds_per_1000,
                    f"Fréchet at guidance 1 {g1.frechet:.1f} ({ev.ratio(g1):.2f}x the floor), "
                    f"accuracy at guidance 5 {g5.accuracy:.1%}; {sizes.per_class * 10} digits",
                )
            )
    return rows
