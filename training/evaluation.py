"""Sample quality of a run: class accuracy and Fréchet distance against real digits, for every
sampler x steps x guidance cell of a sweep, with the model evaluations (NFE) and seconds each cost.

Both scores use the lab's cached digit classifier (``training.classifier``). The Fréchet distance
is computed in its penultimate feature space between a set of ``n`` images and the real test
split; ``frechet_floor`` is the same distance for ``n`` real *train* digits, i.e. what a perfect
model would score with that many samples: the mean over FLOOR_DRAWS seeded draws, since one draw
of 500 digits varies by about 15% (sd) from the next (the mean of 50: about 2%). Images are uint8
(N, 28, 28), 0 = black background. Results are recorded in the run's evaluation.json
(training.evaluation_record).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from samplers.table import sampler_spec

from .classifier import ClassifierConfig, TrainedClassifier, load_classifier
from .config import GUIDANCE_SCALES, PER_CLASS, SAMPLE_BATCH, ConfigError, check_sampler
from .data import Digits, derive_seed, from_signed, load_dataset
from .evaluation_record import (
    EvaluationCell,
    FrechetFloor,
    RunEvaluation,
    check_recordable,
    nfe,
    read_evaluation,
    record_evaluation,
)

if TYPE_CHECKING:
    from .pretrained import LabModel

FLOOR_DRAWS = 50


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features a (N, F) and b (M, F).

    ||mu_a - mu_b||^2 + tr(Ca) + tr(Cb) - 2 tr((Ca^1/2 Cb Ca^1/2)^1/2), in float64 through
    symmetric eigendecompositions (stable for singular covariances).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"need two (N>=2, F) feature sets with equal F, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    w, v = torch.linalg.eigh(ca)
    sqrt_ca = (v * w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(sqrt_ca @ cb @ sqrt_ca).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * cross
    return max(float(fd), 0.0)


def class_accuracy(classifier: TrainedClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of uint8 images the classifier assigns to their intended labels (N,)."""
    return float((classifier.predict(images) == labels.cpu()).float().mean())


def stratified_subset(data: Digits, per_class: int, seed: int) -> Digits:
    """``per_class`` images of each class (fewer if a class has fewer), chosen by a seeded draw."""
    g = torch.Generator().manual_seed(derive_seed(seed, "subset"))
    parts = []
    for k in range(data.num_classes):
        idx = (data.labels == k).nonzero().squeeze(1)
        parts.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    idx = torch.cat(parts)
    return Digits(data.images[idx], data.labels[idx], data.name, data.class_names)


def frechet_floor(
    classifier: TrainedClassifier,
    train: Digits,
    reference: Tensor,
    per_class: int,
    seed: int = 0,
    draws: int = FLOOR_DRAWS,
) -> tuple[float, float]:
    """Mean and standard deviation, over `draws` seeded draws of ``per_class`` real train digits a
    class, of their Fréchet distance to the ``reference`` (M, F) features of the real test split."""
    fds = []
    for k in range(draws):
        real = stratified_subset(train, per_class, derive_seed(seed, "floor", k))
        fds.append(frechet_distance(classifier.features(real.images), reference))
    return statistics.mean(fds), statistics.stdev(fds) if draws > 1 else 0.0


def score_samples(
    classifier: TrainedClassifier, images: Tensor, labels: Tensor | None, reference: Tensor
) -> tuple[float | None, float]:
    """(accuracy or None for unlabeled images, Fréchet distance to ``reference`` (M, F)
    features)."""
    acc = None if labels is None else class_accuracy(classifier, images, labels)
    return acc, frechet_distance(classifier.features(images), reference)


# ----------------------------------------------------------------------------- the sweep
Progress = Callable[[int, int, str], None]
"""progress(i, total, label): cell i (0-based) of `total` starts, `label` saying which
("flow-class: heun 8, guidance 5"); at the end progress(total, total, "done"). i / total is the
fraction done."""


@dataclass(frozen=True)
class SweepPlan:
    """What one run's sweep scores: its model, the (sampler, steps, guidance) cells that suit it
    (guidance None for an unconditional model), and why the others were left out."""

    run_dir: Path
    lab: LabModel
    cells: tuple[tuple[str, int, float | None], ...]
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepResult:
    """A run's scored cells with their floor (`evaluation`), and why cells were left out."""

    run_dir: Path
    evaluation: RunEvaluation
    skipped: tuple[str, ...] = ()


def plan_sweep(
    run_dir: str | Path,
    samplers: Sequence[str] = (),
    steps: Sequence[int] = (),
    guidance_scales: Sequence[float] = GUIDANCE_SCALES,
    *,
    checkpoint: int | str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> SweepPlan:
    """Load a run's model and lay out every sampler x steps x guidance cell (no samplers or
    steps: the run's own). A (sampler, steps) that does not suit the model (check_sampler) is left
    out with its reason in `skipped`; ConfigError when none suits. An unconditional model gets
    one cell per (sampler, steps), guidance None; "direct" (the single-step denoisers) one call."""
    from .pretrained import load_lab_model

    lab = load_lab_model(run_dir, checkpoint, device, precision)
    cfg = lab.config
    scales = list(dict.fromkeys(guidance_scales)) if lab.class_conditional else [None]
    cells, skipped = [], []
    for sampler in dict.fromkeys(samplers or [cfg.sampler]):
        for n in [1] if sampler == "direct" else dict.fromkeys(steps or [cfg.sample_steps]):
            try:
                check_sampler(cfg, sampler, n)
            except ConfigError as e:
                skipped += [str(e)] * (str(e) not in skipped)
                continue
            cells += [(sampler, n, g) for g in scales]
    if not cells:
        raise ConfigError(
            skipped[0]
            if len(skipped) == 1
            else f"nothing asked suits {Path(run_dir).name}: " + "; ".join(skipped)
        )
    return SweepPlan(Path(run_dir), lab, tuple(cells), tuple(skipped))


@dataclass
class _Scorer:
    """The evaluation classifier of a dataset, the real digits it scores against, its floors."""

    classifier: TrainedClassifier
    train: Digits
    reference: Tensor  # (M, F) features of the real test split
    floors: dict[tuple[int, int], FrechetFloor]

    def floor(self, per_class: int, seed: int) -> FrechetFloor:
        if (per_class, seed) not in self.floors:
            mean, sd = frechet_floor(self.classifier, self.train, self.reference, per_class, seed)
            self.floors[per_class, seed] = FrechetFloor(
                self.train.name,
                per_class,
                FLOOR_DRAWS,
                mean,
                sd,
                seed,
                self.classifier.test_accuracy,
            )
        return self.floors[per_class, seed]


def _guidance_key(g: float | None) -> str:
    return "none" if g is None else f"{g:g}"


def _cell_label(sampler: str, steps: int, g: float | None) -> str:
    return f"{sampler} {steps}, " + ("unguided" if g is None else f"guidance {g:g}")


def _score_cell(
    lab: LabModel,
    scorer: _Scorer,
    cell: tuple[str, int, float | None],
    *,
    per_class: int,
    seed: int,
    repeats: int,
    batch_size: int,
) -> EvaluationCell:
    """Sample a cell `repeats` times (repeat r as seed + r alone would) and score it; the wall
    time of the sampling (to images on the CPU) is measured."""
    sampler, steps, g = cell
    labels = torch.arange(lab.config.num_classes).repeat_interleave(per_class)
    scores, seconds = [], 0.0
    for r in range(repeats):
        gen = torch.Generator(lab.device).manual_seed(
            derive_seed(seed + r, "evaluate", _guidance_key(g))
        )
        start = time.perf_counter()
        x = lab.sample(
            labels if g is not None else torch.full_like(labels, -1),
            guidance_scale=g,
            sampler=sampler,
            steps=steps,
            generator=gen,
            batch_size=batch_size,
        )
        images = from_signed(x).squeeze(1).cpu()  # .cpu() waits for the device
        seconds += time.perf_counter() - start
        scores.append(
            score_samples(
                scorer.classifier, images, labels if g is not None else None, scorer.reference
            )
        )
    accs, fds = zip(*scores, strict=True)
    return EvaluationCell(
        checkpoint=lab.checkpoint.name if lab.checkpoint else None,
        sampler=sampler,
        steps=steps,
        nfe=nfe(sampler, steps, g),
        guidance=None if g is None else float(g),
        per_class=per_class,
        repeats=repeats,
        seed=seed,
        precision=lab.precision,
        dataset=scorer.train.name,
        accuracy=None if g is None else statistics.mean(accs),
        frechet=statistics.mean(fds),
        frechet_sd=statistics.stdev(fds) if repeats > 1 else None,
        seconds_per_1000=1000 * seconds / (repeats * len(labels)),
        device=str(lab.device),
        evaluated=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def run_sweeps(
    plans: Sequence[SweepPlan],
    *,
    per_class: int = PER_CLASS,
    seed: int = 0,
    repeats: int = 1,
    runs_dir: str | Path | None = None,
    batch_size: int = SAMPLE_BATCH,
    classifier_config: ClassifierConfig = ClassifierConfig(),
    write: bool = True,
    progress: Progress | None = None,
) -> list[SweepResult]:
    """Score every cell of every plan; with `write`, each cell joins its run's evaluation.json
    as soon as it is scored (record_evaluation) and the run's results go to W&B at its end.

    Class models: ``per_class`` digits of each class a cell, drawn ``repeats`` times; unconditional
    models: 10 x ``per_class`` images. The classifier is the cached one for each run's dataset
    under ``runs_dir`` (default: the run folder's parent). Before anything is sampled, a run whose
    record could not take the results raises RunFileError.
    """
    from .tracking import push_evaluation

    if write:
        for plan in plans:
            check_recordable(plan.run_dir)
    total, done = sum(len(p.cells) for p in plans), 0
    scorers: dict[tuple[str, Path, str], _Scorer] = {}
    results = []
    for plan in plans:
        cfg, dataset = plan.lab.config, plan.lab.dataset
        folder = Path(runs_dir or plan.run_dir.parent).resolve()
        key = (dataset, folder, str(plan.lab.device))
        if key not in scorers:
            classifier = load_classifier(
                dataset,
                folder,
                data_root=cfg.data_root,
                cfg=classifier_config,
                device=plan.lab.device,
            )
            train = load_dataset(dataset, cfg.data_root, "train")
            test = load_dataset(dataset, cfg.data_root, "test")
            scorers[key] = _Scorer(classifier, train, classifier.features(test.images), {})
        scorer = scorers[key]
        floor = scorer.floor(per_class, seed)
        sampler, _, g = plan.cells[0]  # warm up: one step, so one-time costs are not timed
        plan.lab.sample(
            torch.full((min(batch_size, cfg.num_classes * per_class),), -1 if g is None else 0),
            guidance_scale=g,
            sampler=sampler,
            steps=1,
            generator=torch.Generator(plan.lab.device).manual_seed(0),
        )
        cells = []
        for cell in plan.cells:
            if progress is not None:
                progress(done, total, f"{plan.run_dir.name}: {_cell_label(*cell)}")
            cells.append(
                _score_cell(
                    plan.lab,
                    scorer,
                    cell,
                    per_class=per_class,
                    seed=seed,
                    repeats=repeats,
                    batch_size=batch_size,
                )
            )
            if write:
                record_evaluation(plan.run_dir, cells[-1:], [floor])
            done += 1
        if write:
            push_evaluation(plan.run_dir, read_evaluation(plan.run_dir).to_json())
        results.append(
            SweepResult(plan.run_dir, RunEvaluation(tuple(cells), (floor,)), plan.skipped)
        )
    if progress is not None:
        progress(total, total, "done")
    return results


def evaluate_run(
    run_dir: str | Path,
    guidance_scales: Sequence[float] = GUIDANCE_SCALES,
    *,
    samplers: Sequence[str] = (),
    steps: Sequence[int] = (),
    checkpoint: int | str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    **options: Any,
) -> SweepResult:
    """plan_sweep then run_sweeps for one run (`options`: run_sweeps'): the run's own sampler
    and steps unless `samplers` / `steps` are given; `precision` is the UNet's autocast, as in
    load_lab_model."""
    plan = plan_sweep(
        run_dir,
        samplers,
        steps,
        guidance_scales,
        checkpoint=checkpoint,
        device=device,
        precision=precision,
    )
    return run_sweeps([plan], **options)[0]


# ----------------------------------------------------------------------------- the table
def _floor_line(floor: FrechetFloor) -> str:
    spread = (
        "one draw"
        if floor.sd is None or floor.draws == 1
        else f"mean of {floor.draws} draws, sd {floor.sd:.2f}"
    )
    return (
        f"{floor.dataset}: classifier test accuracy {100 * floor.classifier_test_accuracy:.1f}%, "
        f"real-vs-real Frechet floor {floor.mean:.2f} at {floor.per_class} a class ({spread})"
    )


def format_evaluation(results: Sequence[SweepResult]) -> str:
    """What `python -m training evaluate` prints: a line per run (checkpoint, precision,
    device, cells left out) and per floor, then one table of every cell: sampler, steps, NFE,
    guidance, class accuracy, Fréchet distance (with its sd over repeats), its ratio to the floor
    of its sample count, and seconds per 1,000 digits."""
    lines, floors = [], {}
    for res in results:
        first = res.evaluation.cells[0]
        lines.append(f"{res.run_dir.name}: {first.checkpoint}, {first.precision} on {first.device}")
        lines += [f"  left out: {reason}" for reason in res.skipped]
        floors |= {f.key: f for f in res.evaluation.floors}
    lines += [_floor_line(f) for f in floors.values()] + [""]
    cells = [(res, c) for res in results for c in res.evaluation.cells]
    repeats = max(c.repeats for _, c in cells)
    if repeats > 1:
        lines.insert(
            -1, f"accuracy and Frechet distance: means of {repeats} sample sets, sd beside"
        )
    if any(c.sampler != "direct" and sampler_spec(c.sampler).guidance == "input" for _, c in cells):
        lines.insert(-1, "NFE: a guidance pair counts 2; a student takes the scale as an input")
    head = ["run"] * (len(results) > 1) + ["sampler", "steps", "NFE", "guidance", "class acc"]
    head += ["Frechet"] + ["sd"] * (repeats > 1) + ["x floor", "s/1000 digits"]
    rows = [head]
    for res, c in cells:
        ratio = res.evaluation.ratio(c)
        row = [res.run_dir.name] * (len(results) > 1) + [c.sampler, str(c.steps), str(c.nfe)]
        row += ["-" if c.guidance is None else f"{c.guidance:g}"]
        row += ["n/a" if c.accuracy is None else f"{100 * c.accuracy:.1f}%", f"{c.frechet:.2f}"]
        row += [f"{c.frechet_sd:.2f}" if c.frechet_sd is not None else "-"] * (repeats > 1)
        row += ["-" if ratio is None else f"{ratio:.2f}"]
        row += ["-" if c.seconds_per_1000 is None else f"{c.seconds_per_1000:.1f}"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    left = 1 + (len(results) > 1)  # text columns (run, sampler) left-aligned, numbers right
    for r in rows:
        cols = [
            v.ljust(w) if i < left else v.rjust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cols).rstrip())
    return "\n".join(lines)
