"""Absurd sizes fail fast (issue 36 finding 9): each size a user can type is refused with its limit
in one line (exit status 2), before anything of that size is allocated or any work is done; a
full disk under the classifier cache is a warning, not a traceback."""

import errno
import os
import shutil
from collections import namedtuple

import pytest
from reliability_helpers import train
from test_disk_faults import small_disk  # noqa: F401 - a fixture (a real 4 MiB tmpfs)

import samplers.app.cli as samplers_cli
import samplers.app.devices
from samplers.app import files
from training import classifier as C
from training import cli

TINY_CLASSIFIER = C.ClassifierConfig(
    width=8, feature_dim=32, passes=1, max_steps=4, batch_size=64, lr=1e-2, max_shift=0
)
HUGE_SEED = str(10**30)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert train(runs, "tiny", "--steps", "2") == 0
    return runs / "tiny"


def one_line_error(main, argv, capsys) -> str:
    """The one line `main(argv)` prints to stderr as it ends with status 2 (a usage error)."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's usage errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err, err  # argparse prints its usage above the line
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--hidden", "20000"], "--hidden must be at most 512, got 20,000"),
        (["--preview-steps", "100000000"], "--preview-steps must be at most 10,000, got"),
        (["--steps", "100000000"], "--steps must be at most 10,000,000, got 100,000,000"),
        (["--seed", HUGE_SEED], "--seed: must be at most 9,223,372,036,854,775,807, got"),
        (["--batch-size", "1000000000"], "--batch-size must be at most 60,000, got"),
        # no longer clamped to the dataset: mnist-5k trains on 4,500 images
        (["--batch-size", "5000"], "--batch-size 5,000 is more than the 4,500 training images"),
    ],
)
def test_a_training_size_over_its_limit_is_refused_before_anything_is_made(
    tmp_path, capsys, argv, said
):
    line = one_line_error(
        cli.main,
        ["flow-class", "--dataset", "mnist-5k", "--wandb-mode", "disabled", "--runs-dir",
         str(tmp_path), "--name", "big", *argv],
        capsys,
    )  # fmt: skip
    assert line.startswith("python -m training: error: ") and said in line, line
    made = (
        sorted(p.name for p in (tmp_path / "big").iterdir()) if (tmp_path / "big").exists() else []
    )
    assert made in ([], ["trainer.lock"])  # the claim at most: no config, no weights


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--steps", "1000000000"], "--steps: must be at most 10,000, got 1000000000"),
        (["--per-class", str(10**12)], "--per-class: must be at most 10,000"),
        (["--seed", HUGE_SEED], "--seed: must be at most 9,223,372,036,854,775,807"),
        (["--batch", "1000000000"], "--batch: must be at most 4,096"),
        (["--out", "/"], "--out / is a folder; give the .npz file to write"),
    ],
)
def test_a_sample_request_over_its_limit_is_refused_in_one_line(run, tmp_path, capsys, argv, said):
    argv = ["sample", str(run), "--out", str(tmp_path / "x.npz"), *argv]
    line = one_line_error(cli.main, argv, capsys)
    assert line.startswith("python -m training") and said in line, line


def test_sample_to_an_unwritable_place_is_refused_before_it_samples(run, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "x.npz"
    line = one_line_error(cli.main, ["sample", str(run), "--out", str(out)], capsys)
    assert line.startswith("python -m training: error: --out ") and "cannot make its folder" in line


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--per-class", str(10**12)], "--per-class: must be at most 10,000"),
        (["--steps", "2", "1000000000"], "--steps: must be at most 10,000"),
        (["--repeats", "1000000"], "--repeats: must be at most 100"),
        (["--seed", HUGE_SEED], "--seed: must be at most 9,223,372,036,854,775,807"),
    ],
)
def test_an_evaluation_over_its_limit_is_refused_in_one_line(run, capsys, argv, said):
    line = one_line_error(cli.main, ["evaluate", str(run), *argv], capsys)
    assert said in line, line


@pytest.mark.parametrize(
    "task, argv, said",
    [
        ("sample", ["--n", "1000000"], "--n: must be at most 1,000, got 1000000"),
        ("sample", ["--seed", HUGE_SEED], "--seed: must be at most 9,223,372,036,854,775,807"),
        ("denoise", ["--kernel-size", "99999"], "kernel_size must be below 56 (twice the image's"),
        ("hybrid", ["--kernel-size", "99999", "--far", "1", "--near", "7"], "must be below 128"),
    ],
)
def test_a_samplers_size_over_its_limit_is_refused_in_one_line(
    run, tmp_path, capsys, task, argv, said
):
    out = tmp_path / "out"
    argv = [task, "--backend", "mnist", "--run", str(run), "--out", str(out), *argv]
    line = one_line_error(samplers_cli.main, argv, capsys)
    assert said in line, line
    assert not list(out.glob("*")) if out.exists() else True  # no figure written


def test_samplers_n_whose_frames_do_not_fit_in_memory_is_refused_before_sampling(
    run, tmp_path, capsys, monkeypatch
):
    free = namedtuple("Memory", "available")(2**18)  # 5 images x 33 frames need 0.5 MiB
    monkeypatch.setattr(samplers.app.devices.psutil, "virtual_memory", lambda: free)
    argv = ["sample", "--backend", "mnist", "--run", str(run), "--out", str(tmp_path), "--n", "5"]
    line = one_line_error(samplers_cli.main, argv, capsys)
    assert (
        line
        == "error: --n 5 with its 33 GIF frames needs about 0.5 MiB of memory; 0.2 MiB is free here"
    )
    assert not list(tmp_path.glob("*.png"))


def test_a_classifier_cache_on_a_full_disk_is_a_warning(small_disk, capsys):  # noqa: F811
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - 8192))
    clf = C.load_classifier("mnist-5k", small_disk, cfg=TINY_CLASSIFIER)  # not SafetensorError
    assert 0 <= clf.test_accuracy <= 1
    err = capsys.readouterr().err
    assert "warning: the classifier was not cached (No space left on device)" in err, err
    assert not list((small_disk / ".cache").glob("*"))  # no part of a cache file is left


def test_a_classifier_cache_write_refused_is_a_warning(tmp_path, capsys, monkeypatch):
    """The same on any machine (no tmpfs): the disk refuses the cache file's rename."""

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(files.os, "replace", full)
    C.load_classifier("mnist-5k", tmp_path, cfg=TINY_CLASSIFIER)
    assert "warning: the classifier was not cached (No space left" in capsys.readouterr().err
    assert not list((tmp_path / ".cache").glob("*"))
