"""Classifier, Fréchet distance, the sampler x steps x guidance sweep and its table (tiny
classifier config, tiny fake runs)."""

import json

import pytest
import torch

from training import classifier as C
from training.config import ConfigError
from training.data import derive_seed, load_dataset
from training.evaluation import (
    FLOOR_DRAWS,
    class_accuracy,
    evaluate_run,
    format_evaluation,
    frechet_distance,
    frechet_floor,
    plan_sweep,
    run_sweeps,
    score_samples,
    stratified_subset,
)
from training.evaluation_record import nfe, read_evaluation
from training.pretrained import load_lab_model

TINY = C.ClassifierConfig(
    width=8, feature_dim=32, passes=1, max_steps=40, batch_size=64, lr=1e-2, max_shift=0
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-5k", split="train"), load_dataset("mnist-5k", split="test")


@pytest.fixture(scope="module")
def tiny_classifier(digits, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return C.load_classifier("mnist-5k", runs, cfg=TINY), runs


def test_classifier_well_above_chance_and_cached(tiny_classifier, digits):
    clf, runs = tiny_classifier
    train, test = digits
    assert clf.test_accuracy > 0.5  # chance is 0.1; ~0.75 after 40 steps
    assert class_accuracy(clf, test.images, test.labels) == pytest.approx(clf.test_accuracy)
    path = C.cache_path(runs, "mnist-5k")
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))
    again = C.load_classifier("mnist-5k", runs, cfg=TINY)  # from the cache: same numbers
    assert again.train_seconds == clf.train_seconds
    assert torch.equal(again.predict(test.images[:50]), clf.predict(test.images[:50]))
    assert clf.features(test.images[:7]).shape == (7, 32)
    with pytest.raises(ValueError, match="uint8"):
        clf.predict(test.images[:2].float())


def test_frechet_distance_identical_and_shifted():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 16, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = torch.randn(400, 16, generator=g)
    near, shifted = frechet_distance(a, b), frechet_distance(a, b + 1.0)
    assert near < 2.0 and shifted == pytest.approx(near + 16, rel=0.1)  # ||mu||^2 adds ~16
    scaled = frechet_distance(a, 3 * b)  # covariance term: (3-1)^2 * 16 = 64
    assert scaled == pytest.approx(64, rel=0.15)
    # singular covariances stay finite (fewer samples than features)
    assert frechet_distance(a[:5], b[:5]) >= 0
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :3])


def test_frechet_floor_below_corrupted_digits(tiny_classifier, digits):
    clf, _ = tiny_classifier
    train, test = digits
    ref = clf.features(test.images)
    floor, _ = frechet_floor(clf, train, ref, per_class=20)
    sub = stratified_subset(train, 20, seed=1)
    assert sub.labels.bincount().tolist() == [20] * 10
    noisy = sub.images.float() + 120 * torch.rand(
        sub.images.shape, generator=torch.Generator().manual_seed(0)
    )
    acc, fd = score_samples(clf, noisy.clamp(0, 255).to(torch.uint8), sub.labels, ref)
    acc_clean, fd_clean = score_samples(clf, sub.images, sub.labels, ref)
    assert fd > 2 * floor and fd > fd_clean and acc < acc_clean
    acc_none, _ = score_samples(clf, sub.images, None, ref)
    assert acc_none is None


def test_frechet_floor_is_the_mean_of_seeded_draws(tiny_classifier, digits):
    clf, _ = tiny_classifier
    train, test = digits
    ref = clf.features(test.images)
    mean, sd = frechet_floor(clf, train, ref, per_class=20, seed=3, draws=4)
    subsets = [stratified_subset(train, 20, derive_seed(3, "floor", k)) for k in range(4)]
    draws = [frechet_distance(clf.features(subset.images), ref) for subset in subsets]
    assert mean == pytest.approx(sum(draws) / 4) and sd == pytest.approx(
        torch.tensor(draws).std().item()
    )
    assert sd > 0 and len({round(d, 6) for d in draws}) == 4  # four different subsets
    assert frechet_floor(clf, train, ref, per_class=20, seed=3, draws=4) == (
        mean,
        sd,
    )  # reproducible


def test_evaluate_run_class_model(fake_run, tiny_classifier):
    clf, runs = tiny_classifier
    run_dir = fake_run("ddpm-class", sampler="ddim")
    result = evaluate_run(
        run_dir, (0, 5), per_class=3, runs_dir=runs, classifier_config=TINY, steps=(2,)
    )
    cells, (floor,) = result.evaluation.cells, result.evaluation.floors
    assert [(c.sampler, c.steps, c.guidance, c.nfe) for c in cells] == [
        ("ddim", 2, 0.0, 4),  # a guidance pair at any scale but 1: two evaluations a step
        ("ddim", 2, 5.0, 4),
    ]
    assert all(0 <= c.accuracy <= 1 and c.frechet > 0 and c.seconds_per_1000 > 0 for c in cells)
    assert all(c.checkpoint == "epoch-0001" and c.per_class == 3 for c in cells)
    assert floor.classifier_test_accuracy == clf.test_accuracy and floor.mean > 0
    assert floor.draws == FLOOR_DRAWS and floor.sd > 0 and floor.per_class == 3
    assert read_evaluation(run_dir).cells == cells  # recorded in evaluation.json
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == {"status": "finished", "epoch": 1}  # the training summary is left alone
    text = format_evaluation([result])
    assert f"Frechet floor {floor.mean:.2f} at 3 a class (mean of {FLOOR_DRAWS} draws" in text
    c = cells[1]
    assert text.splitlines()[-1].split() == [  # printed = recorded
        "ddim",
        "2",
        "4",
        "5",
        f"{100 * c.accuracy:.1f}%",
        f"{c.frechet:.2f}",
        f"{c.frechet / floor.mean:.2f}",
        f"{c.seconds_per_1000:.1f}",
    ]


def test_evaluate_run_repeats_are_the_seeds_in_turn(fake_run, tiny_classifier):
    _, runs = tiny_classifier
    run_dir = fake_run("flow-class")
    kw = dict(per_class=2, runs_dir=runs, classifier_config=TINY, steps=(2,), write=False)
    both = evaluate_run(run_dir, (1,), seed=4, repeats=2, **kw).evaluation.cells[0]
    single = [evaluate_run(run_dir, (1,), seed=s, **kw).evaluation.cells[0] for s in (4, 5)]
    fds = [c.frechet for c in single]
    assert fds[0] != fds[1] and both.frechet == pytest.approx(sum(fds) / 2)
    assert both.frechet_sd == pytest.approx(abs(fds[0] - fds[1]) / 2**0.5)
    assert both.accuracy == pytest.approx(sum(c.accuracy for c in single) / 2)
    assert single[0].frechet_sd is None and both.repeats == 2


def test_evaluate_run_time_only_model(fake_run, tiny_classifier):
    _, runs = tiny_classifier
    run_dir = fake_run("flow-time")
    result = evaluate_run(
        run_dir, per_class=2, runs_dir=runs, classifier_config=TINY, steps=(2,), write=False
    )
    (cell,) = result.evaluation.cells  # one unguided cell, whatever the guidance scales
    assert cell.guidance is None and cell.accuracy is None and cell.frechet > 0
    assert cell.nfe == 2  # no guidance pair
    assert not (run_dir / "evaluation.json").exists()
    assert "n/a" in format_evaluation([result]).splitlines()[-1]


def test_a_sweep_scores_every_cell_records_them_and_reports_progress(fake_run, tiny_classifier):
    _, runs = tiny_classifier
    run_dir = fake_run("flow-class")
    calls = []
    kw = dict(per_class=2, runs_dir=runs, classifier_config=TINY)
    plan = plan_sweep(run_dir, ("euler", "heun"), (1, 2), (1, 5))
    (result,) = run_sweeps([plan], progress=lambda *a: calls.append(a), **kw)
    cells = result.evaluation.cells
    assert [(c.sampler, c.steps, c.guidance, c.nfe) for c in cells] == [
        ("euler", 1, 1.0, 1),
        ("euler", 1, 5.0, 2),
        ("euler", 2, 1.0, 2),
        ("euler", 2, 5.0, 4),
        ("heun", 1, 1.0, 2),  # Heun: two evaluations a step
        ("heun", 1, 5.0, 4),
        ("heun", 2, 1.0, 4),
        ("heun", 2, 5.0, 8),
    ]
    assert calls[0] == (0, 8, "flow-class: euler 1, guidance 1")
    assert [c[0] for c in calls] == list(range(9)) and calls[-1] == (8, 8, "done")
    assert read_evaluation(run_dir).cells == cells
    # a later sweep replaces the cells it scores again and keeps the others
    again = evaluate_run(run_dir, (5,), samplers=("heun",), steps=(2,), seed=3, **kw)
    stored = read_evaluation(run_dir)
    assert len(stored.cells) == 8 and again.evaluation.cells[0] in stored.cells
    assert stored.cells[7] == again.evaluation.cells[0] and stored.cells[:7] == cells[:7]
    text = format_evaluation([result])
    lines = text.splitlines()
    assert lines[3].split() == [
        "sampler", "steps", "NFE", "guidance", "class", "acc", "Frechet", "x", "floor",
        "s/1000", "digits",
    ]  # fmt: skip
    assert len(lines) == 4 + 8


def test_model_evaluations_counted_equal_nfe(fake_run):
    """nfe() against the UNet calls each sampler makes, counted image by image."""
    lab = load_lab_model(fake_run("flow-class"))
    seen = []
    forward = lab.unet.forward

    def counting(x, *args, **kwargs):
        seen.append(x.shape[0])
        return forward(x, *args, **kwargs)

    lab.unet.forward = counting
    for sampler in ("ddpm", "ddim", "euler", "heun"):
        for g in (1.0, 5.0):
            seen.clear()
            lab.sample([0, 1, 2], sampler=sampler, steps=3, guidance_scale=g)
            assert sum(seen) / 3 == nfe(sampler, 3, g), (sampler, g)


def test_samplers_that_do_not_suit_the_model_are_left_out_or_refused(fake_run):
    run_dir = fake_run("ddpm-class")
    plan = plan_sweep(run_dir, ("euler", "ddim"), (2, 400), (5,))
    assert plan.cells == (("ddim", 2, 5),)
    assert plan.skipped == (
        "sampler 'euler' does not apply to a ddpm model; choose from ddpm, ddim, dpmpp_2m",
        "the ddim sampler takes 1 to 300 steps on this model (its T), got 400",
    )
    with pytest.raises(ConfigError, match="^sampler 'heun' does not apply to a ddpm model"):
        plan_sweep(run_dir, ("heun",), (2,))
    with pytest.raises(
        ConfigError, match="nothing asked suits ddpm-class: sampler 'euler'.*'heun'"
    ):
        plan_sweep(run_dir, ("euler", "heun"), (2,))


def test_evaluate_refuses_a_record_it_cannot_merge_into_before_it_samples(
    fake_run, capsys, monkeypatch
):
    import training.evaluation as ev
    from training import cli

    def no_classifier(*args, **kwargs):
        raise AssertionError("evaluate sampled although it could not record the result")

    monkeypatch.setattr(ev, "load_classifier", no_classifier)
    run_dir = fake_run("flow-class")
    damaged = '{"format": 1, "cells": [{"frechet": []}]}'
    (run_dir / "evaluation.json").write_text(damaged)
    assert cli.main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"python -m training: error: {run_dir / 'evaluation.json'}: cell 0: checkpoint is "
        "missing (fix or remove the file; nothing was changed)\n"
    )
    assert (run_dir / "evaluation.json").read_text() == damaged


def test_the_record_goes_to_the_runs_wandb_summary(fake_run, tiny_classifier, monkeypatch):
    import training.tracking as tracking

    pushed = []

    class Recorder:  # the W&B run of the same id and mode, recording instead of logging
        def __init__(self, run_dir, cfg, run_id, mode):
            pushed.append((run_id, mode))

        def update_summary(self, values):
            pushed.append(values)

        def finish(self):
            pushed.append("finished")

    monkeypatch.setattr(tracking, "WandbRun", Recorder)
    _, runs = tiny_classifier
    run_dir = fake_run("flow-class")
    summary = {"status": "finished", "wandb": {"id": "abc", "mode": "offline"}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    evaluate_run(run_dir, (5,), per_class=1, steps=(1,), runs_dir=runs, classifier_config=TINY)
    assert pushed == [
        ("abc", "offline"),
        {"evaluation": read_evaluation(run_dir).to_json()},
        "finished",
    ]
