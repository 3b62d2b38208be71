"""Classifier, Fréchet distance and evaluate_run (tiny classifier config, tiny fake runs)."""

import json

import pytest
import torch

from training import classifier as C
from training.data import derive_seed, load_dataset
from training.evaluation import (
    FLOOR_DRAWS,
    class_accuracy,
    evaluate_run,
    format_evaluation,
    frechet_distance,
    frechet_floor,
    score_samples,
    stratified_subset,
)

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
        run_dir, (0, 5), per_class=3, runs_dir=runs, classifier_config=TINY, steps=2
    )
    assert set(result["accuracy"]) == set(result["frechet"]) == {"0", "5"}
    assert all(0 <= a <= 1 for a in result["accuracy"].values())
    assert result["classifier_test_accuracy"] == clf.test_accuracy and result["frechet_floor"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["evaluation"]["frechet"] == result["frechet"]
    assert result["frechet_floor_draws"] == FLOOR_DRAWS and result["frechet_floor_sd"] > 0
    assert "guidance 5" in format_evaluation(result)
    assert f"mean of {FLOOR_DRAWS} draws" in format_evaluation(result)
    old = {k: v for k, v in result.items() if k not in ("frechet_floor_sd", "frechet_floor_draws")}
    assert "one draw" in format_evaluation(old)  # summaries written before the floor was a mean


def test_evaluate_run_repeats_are_the_seeds_in_turn(fake_run, tiny_classifier):
    _, runs = tiny_classifier
    run_dir = fake_run("flow-class")
    kw = dict(per_class=2, runs_dir=runs, classifier_config=TINY, steps=2, write=False)
    both = evaluate_run(run_dir, (1,), seed=4, repeats=2, **kw)
    single = [evaluate_run(run_dir, (1,), seed=s, **kw) for s in (4, 5)]
    fds = [r["frechet"]["1"] for r in single]
    assert fds[0] != fds[1] and both["frechet"]["1"] == pytest.approx(sum(fds) / 2)
    assert both["frechet_sd"]["1"] == pytest.approx(abs(fds[0] - fds[1]) / 2**0.5)
    accs = [r["accuracy"]["1"] for r in single]
    assert both["accuracy"]["1"] == pytest.approx(sum(accs) / 2)
    assert single[0]["frechet_sd"] == {"1": None} and both["repeats"] == 2
    assert "mean of 2 repeats" in format_evaluation(both) and "repeats" not in format_evaluation(
        single[0]
    )


def test_evaluate_run_time_only_model(fake_run, tiny_classifier):
    _, runs = tiny_classifier
    run_dir = fake_run("flow-time")
    result = evaluate_run(
        run_dir, per_class=2, runs_dir=runs, classifier_config=TINY, steps=2, write=False
    )
    assert result["accuracy"] == {"none": None} and result["frechet"]["none"] > 0
    assert "evaluation" not in json.loads((run_dir / "summary.json").read_text())
    assert "n/a" in format_evaluation(result)
