"""Sample quality of a run: class accuracy and Fréchet distance against real digits.

Both use the lab's cached digit classifier (``training.classifier``). The Fréchet distance is
computed in its penultimate feature space between a set of ``n`` images and the real test split;
``frechet_floor`` is the same distance for ``n`` real *train* digits, i.e. what a perfect model
would score with that many samples: the mean over FLOOR_DRAWS seeded draws, since one draw of 500
digits varies by about 15% (sd) from the next (the mean of 50: about 2%). Images are uint8
(N, 28, 28), 0 = black background.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .classifier import ClassifierConfig, TrainedClassifier, load_classifier
from .config import GUIDANCE_SCALES, PER_CLASS, SAMPLE_BATCH, check_sampler
from .data import Digits, derive_seed, from_signed, load_dataset
from .runs import read_summary

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


def _guidance_key(g: float | None) -> str:
    return "none" if g is None else f"{g:g}"


def evaluate_run(
    run_dir: str | Path,
    guidance_scales: Sequence[float] = GUIDANCE_SCALES,
    *,
    per_class: int = PER_CLASS,
    seed: int = 0,
    repeats: int = 1,
    sampler: str | None = None,
    steps: int | None = None,
    checkpoint: int | str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    runs_dir: str | Path | None = None,
    batch_size: int = SAMPLE_BATCH,
    classifier_config: ClassifierConfig = ClassifierConfig(),
    write: bool = True,
) -> dict[str, Any]:
    """Sample a run's model and score it; merge the result into summary.json["evaluation"].

    Class models: ``per_class`` digits of each class at every guidance scale, drawn ``repeats``
    times (repeat r as ``seed + r`` alone would draw them); the scores are the repeats' means and
    ``frechet_sd`` their standard deviation (None for one repeat). Time-only and
    single-step models: one unlabeled set of ``10 * per_class`` images under the key "none"
    (accuracy None). The classifier is the cached one for the run's dataset under
    ``runs_dir`` (default: the run folder's parent). `precision`: the UNet's autocast, as in
    load_lab_model.
    Returns {"accuracy": {g: acc}, "frechet": {g: fd}, "frechet_sd": {g: sd | None},
    "frechet_floor" (mean of FLOOR_DRAWS draws), "frechet_floor_sd", "frechet_floor_draws",
    "classifier_test_accuracy", "dataset", "per_class", "repeats", "seed", "sampler", "steps",
    "precision", "checkpoint"}.
    """
    from .pretrained import load_lab_model

    run_dir = Path(run_dir)
    lab = load_lab_model(run_dir, checkpoint, device, precision)
    cfg, device = lab.config, lab.device
    check_sampler(cfg, sampler or cfg.sampler, steps or cfg.sample_steps)  # before the classifier
    if write:
        read_summary(run_dir)  # RunFileError for a corrupt summary.json now, not after sampling
    classifier = load_classifier(
        cfg.dataset,
        runs_dir or run_dir.parent,
        data_root=cfg.data_root,
        cfg=classifier_config,
        device=device,
    )
    train = load_dataset(cfg.dataset, cfg.data_root, "train")
    test = load_dataset(cfg.dataset, cfg.data_root, "test")
    reference = classifier.features(test.images)
    scales: list[float | None] = list(guidance_scales) if lab.class_conditional else [None]
    result: dict[str, Any] = {"accuracy": {}, "frechet": {}, "frechet_sd": {}}
    labels = torch.arange(train.num_classes).repeat_interleave(per_class)
    for g in scales:
        key, scores = _guidance_key(g), []
        for r in range(repeats):
            gen = torch.Generator(device).manual_seed(derive_seed(seed + r, "evaluate", key))
            x = lab.sample(
                labels if g is not None else torch.full_like(labels, -1),
                guidance_scale=g,
                sampler=sampler,
                steps=steps,
                generator=gen,
                batch_size=batch_size,
            )
            scores.append(
                score_samples(
                    classifier,
                    from_signed(x).squeeze(1).cpu(),
                    labels if g is not None else None,
                    reference,
                )
            )
        accs, fds = zip(*scores, strict=False)
        result["accuracy"][key] = None if g is None else statistics.mean(accs)
        result["frechet"][key] = statistics.mean(fds)
        result["frechet_sd"][key] = statistics.stdev(fds) if repeats > 1 else None
    floor, floor_sd = frechet_floor(classifier, train, reference, per_class, seed)
    result.update(
        frechet_floor=floor,
        frechet_floor_sd=floor_sd,
        frechet_floor_draws=FLOOR_DRAWS,
        classifier_test_accuracy=classifier.test_accuracy,
        dataset=cfg.dataset,
        per_class=per_class,
        repeats=repeats,
        seed=seed,
        sampler=sampler or cfg.sampler,
        steps=steps or cfg.sample_steps,
        precision=lab.precision,
        checkpoint=lab.checkpoint.name if lab.checkpoint else None,
    )
    if write:
        from .tracking import push_evaluation

        push_evaluation(run_dir, result)
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """Human-readable lines for an ``evaluate_run`` result (what ``python -m training evaluate``
    prints)."""
    lines = [
        f"dataset {result['dataset']}: classifier test accuracy "
        f"{100 * result['classifier_test_accuracy']:.1f}%, real-vs-real Frechet floor "
        f"{result['frechet_floor']:.3f} ({result['per_class']} a class; {_floor_spread(result)})"
    ]
    for g, fd in result["frechet"].items():
        acc, sd = result["accuracy"].get(g), result.get("frechet_sd", {}).get(g)
        head = "unguided samples" if g == "none" else f"guidance {g}"
        acc_text = "n/a (time-only model)" if acc is None else f"{100 * acc:.1f}%"
        spread = "" if sd is None else f"mean of {result['repeats']} repeats, sd {sd:.2f}; "
        lines.append(
            f"{head}: class accuracy {acc_text}, Frechet distance {fd:.3f} "
            f"({spread}{fd / result['frechet_floor']:.2f}x the floor)"
        )
    return "\n".join(lines)


def _floor_spread(result: dict[str, Any]) -> str:
    draws = result.get(
        "frechet_floor_draws"
    )  # absent in summaries written before the floor was a mean
    return (
        "one draw"
        if draws is None
        else f"mean of {draws} draws, sd {result['frechet_floor_sd']:.2f}"
    )
