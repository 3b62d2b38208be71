"""The `python -m training` command line: bad options, sample (.npz), evaluate, figures."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.tiny_run import tiny_args
from training import cli
from training.classifier import ClassifierConfig
from training.config import save_options
from training.evaluation_record import read_evaluation
from training.runs import load_run_config, read_summary

ROOT = Path(__file__).resolve().parents[2]
TINY = tiny_args("--steps", "2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny class-conditional and a tiny time-only run."""
    runs = tmp_path_factory.mktemp("runs")
    for experiment in ("flow-class", "ddpm-time"):
        assert cli.main([experiment, *TINY, "--runs-dir", str(runs)]) == 0
    return runs


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nonsense"], "invalid choice: 'nonsense'"),
        (["flow-class", "--epochs", "-3"], "argument --epochs: must be positive, got -3"),
        (["flow-class", "--epochs", "0"], "argument --epochs: must be positive, got 0"),
        (["flow-class", "--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
        (["flow-class", "--lr", "abc"], "argument --lr: expected a number"),
        (["flow-class", "--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
        (
            ["flow-class", "--guidance-scale", "nan"],
            "argument --guidance-scale: expected a finite number",
        ),
        (
            ["flow-class", "--p-uncond", "inf"],
            "argument --p-uncond: expected a finite number, got 'inf'",
        ),
        (
            ["sample", "RUN", "--guidance-scale", "nan"],
            "argument --guidance-scale: expected a finite number",
        ),
        (
            ["evaluate", "RUN", "--guidance", "1", "inf"],
            "argument --guidance: expected a finite number",
        ),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "name, message",
    [
        ("../escape", "invalid run name '../escape'"),
        ("/abs/run", "invalid run name '/abs/run'"),
        ("a/b", "invalid run name 'a/b'"),
    ],
)
def test_run_names_must_stay_inside_the_runs_folder(tmp_path, capsys, name, message):
    assert cli.main(["flow-class", *TINY, "--runs-dir", str(tmp_path), "--name", name]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path.parent / "escape").exists()


def test_a_width_the_improved_unet_cannot_take_is_a_config_error(tmp_path, capsys):
    assert (
        cli.main(
            [
                "flow-class",
                *TINY,
                "--arch",
                "improved",
                "--hidden",
                "12",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "needs a width (--hidden) divisible by 8" in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_resume_and_existing_run_errors(runs, tmp_path, capsys):
    assert cli.main(["flow-class", *TINY, "--runs-dir", str(tmp_path), "--resume"]) == 2
    assert "--resume: there is no run 'flow-class'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((runs / "flow-class" / "config.json").read_text())
    # killed before its first checkpoint: --resume starts it again from step 0
    assert (
        cli.main(["flow-class", *TINY, "--runs-dir", str(tmp_path), "--name", "empty", "--resume"])
        == 0
    )
    assert read_summary(empty)["status"] == "finished" and read_summary(empty)["step"] == 2
    capsys.readouterr()
    assert cli.main(["flow-class", *TINY, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and err.count("\n") == 1


def options(argv):
    return cli.options_from_args(cli.build_parser().parse_args(argv))


def test_config_file_gives_the_options_and_flags_beside_it_win(runs, tmp_path, capsys):
    """--config reads an options file (what the Train page writes) or a run's config.json, through
    the same make_options as the flags; a flag beside it overrides the file's value."""
    stored = load_run_config(runs / "flow-class").options
    again = options(["flow-class", "--config", str(runs / "flow-class" / "config.json")])
    assert again == stored  # a run's config.json: its options (the plan is the run's own)
    save_options(tmp_path / "o.json", stored)
    mine = options(["flow-class", "--config", str(tmp_path / "o.json"), "--seed", "7"])
    assert mine == replace(stored, seed=7)
    by_epochs = options(["flow-class", "--config", str(tmp_path / "o.json"), "--epochs", "3"])
    assert (by_epochs.epochs, by_epochs.steps) == (3, None)  # replaces the file's length
    for argv, message in [
        (["ddpm-class", "--config", str(tmp_path / "o.json")], "for flow-class, not ddpm-class"),
        (["flow-class", "--config", str(tmp_path / "o.json"), "--recipe", "fast"], "--config"),
        (["flow-class", "--config", str(tmp_path / "missing.json")], "missing.json"),
    ]:
        assert cli.main([*argv, "--runs-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    (tmp_path / "bad.json").write_text(json.dumps({**stored.to_json(), "dataset": "cifar"}))
    assert cli.main(["flow-class", "--config", str(tmp_path / "bad.json")]) == 2
    assert f"{tmp_path / 'bad.json'}: 'dataset' must be one of" in capsys.readouterr().err


def test_sample_class_model_writes_labelled_uint8_digits(runs, tmp_path):
    out = tmp_path / "s.npz"
    assert (
        cli.main(
            [
                "sample",
                str(runs / "flow-class"),
                "--per-class",
                "2",
                "--guidance-scale",
                "5",
                "--steps",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    z = np.load(out)
    assert z["images"].dtype == np.uint8 and z["images"].shape == (20, 28, 28)
    assert z["labels"].tolist() == [k for k in range(10) for _ in range(2)]
    again = tmp_path / "again.npz"
    assert (
        cli.main(
            [
                "sample",
                str(runs / "flow-class"),
                "--per-class",
                "2",
                "--guidance-scale",
                "5",
                "--steps",
                "3",
                "--out",
                str(again),
                "--batch",
                "7",
            ]
        )
        == 0
    )
    assert np.array_equal(np.load(again)["images"], z["images"])  # seeded, batch-size independent


def test_sample_names_the_file_it_wrote_and_records_how(runs, tmp_path, capsys):
    assert (
        cli.main(
            [
                "sample",
                str(runs / "flow-class"),
                "--per-class",
                "1",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "digits"),
            ]
        )
        == 0
    )
    out = tmp_path / "digits.npz"  # .npz added, and said
    assert f"to {out}" in capsys.readouterr().out and not (tmp_path / "digits").exists()
    z = np.load(out)
    assert (str(z["sampler"]), int(z["steps"]), int(z["seed"])) == ("euler", 2, 0)
    assert str(z["precision"]) in ("no", "bf16") and not list(tmp_path.glob(".*tmp"))


def test_sample_time_only_model_has_labels_minus_one(runs, tmp_path, capsys):
    out = tmp_path / "t.npz"
    assert (
        cli.main(
            [
                "sample",
                str(runs / "ddpm-time"),
                "--per-class",
                "1",
                "--guidance-scale",
                "5",
                "--steps",
                "2",
                "--sampler",
                "ddim",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    z = np.load(out)
    assert z["images"].shape == (10, 28, 28) and set(z["labels"].tolist()) == {-1}
    assert (
        cli.main(["sample", str(runs / "ddpm-time"), "--sampler", "euler", "--out", str(out)]) == 2
    )
    assert "does not apply to a ddpm model" in capsys.readouterr().err
    assert cli.main(["sample", str(runs / "ddpm-time"), "--steps", "301", "--out", str(out)]) == 2
    assert "takes 1 to 300 steps on this model" in capsys.readouterr().err
    assert cli.main(["sample", str(runs / "missing"), "--out", str(out)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_evaluate_prints_one_table_of_what_it_records(runs, capsys, monkeypatch):
    import training.evaluation as ev

    monkeypatch.setitem(
        ev.run_sweeps.__kwdefaults__,
        "classifier_config",
        ClassifierConfig(passes=0.05, max_steps=3),
    )
    flow = str(runs / "flow-class")
    argv = ["--guidance", "0", "5", "--per-class", "2", "--steps", "2", "--repeats", "2"]
    assert cli.main(["evaluate", flow, *argv]) == 0
    out, err = capsys.readouterr()
    stored = read_evaluation(runs / "flow-class")
    (floor,) = stored.floors
    assert f"Frechet floor {floor.mean:.2f} at 2 a class (mean of 50 draws" in out
    assert "means of 2 sample sets" in out and "2/2" in err  # tqdm over the cells
    assert [c.guidance for c in stored.cells] == [0.0, 5.0] and stored.cells[0].repeats == 2
    for row, c in zip(out.splitlines()[-2:], stored.cells, strict=True):  # printed = recorded
        assert row.split() == [
            "euler",
            "2",
            "4",
            f"{c.guidance:g}",
            f"{100 * c.accuracy:.1f}%",
            f"{c.frechet:.2f}",
            f"{c.frechet_sd:.2f}",
            f"{c.frechet / floor.mean:.2f}",
            f"{c.seconds_per_1000:.1f}",
        ]
    # two runs at once: a sampler that does not suit one of them is left out with the reason
    argv = ["--sampler", "heun", "ddim", "--steps", "1", "--guidance", "5", "--per-class", "1"]
    assert cli.main(["evaluate", flow, str(runs / "ddpm-time"), *argv]) == 0
    out = capsys.readouterr().out
    assert "  left out: sampler 'heun' does not apply to a ddpm model" in out
    rows = [line.split() for line in out.splitlines()[-3:]]
    assert [r[:6] for r in rows] == [
        ["flow-class", "heun", "1", "4", "5", rows[0][5]],
        ["flow-class", "ddim", "1", "2", "5", rows[1][5]],
        ["ddpm-time", "ddim", "1", "1", "-", "n/a"],  # unconditional: no guidance pair
    ]
    assert len(read_evaluation(runs / "flow-class").cells) == 4  # joined the earlier two

    def no_classifier(*args, **kwargs):
        raise AssertionError("a refused sampler must not reach the classifier")

    monkeypatch.setattr(ev, "load_classifier", no_classifier)
    assert cli.main(["evaluate", str(runs / "ddpm-time"), "--sampler", "heun"]) == 2
    assert "does not apply to a ddpm model" in capsys.readouterr().err
    assert cli.main(["evaluate", flow, str(runs / "ddpm-time"), "--sampler", "heun"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"python -m training: error: {runs / 'ddpm-time'}: sampler 'heun' does not apply to a "
        "ddpm model; choose from ddpm, ddim, dpmpp_2m\n"
    )


def test_a_device_that_is_not_here_is_one_line_and_status_2(runs, tmp_path, capsys):
    for argv in (
        ["sample", str(runs / "flow-class"), "--out", str(tmp_path / "x.npz")],
        ["evaluate", str(runs / "flow-class")],
        ["figures", str(runs / "flow-class")],
    ):
        assert cli.main([*argv, "--device", "gpu0"]) == 2
        assert capsys.readouterr().err.strip() == (
            "python -m training: error: device 'gpu0' is not "
            "a device name; use one of auto, cpu, cuda, mps"
        )


@pytest.mark.skipif(
    torch.backends.mps.is_available(),
    reason="this machine has the Apple GPU that the test asks for as the absent device",
)
def test_training_on_an_absent_device_writes_nothing(tmp_path, capsys):
    assert cli.main(["flow-class", "--device", "mps", "--runs-dir", str(tmp_path)]) == 2
    assert "no MPS device is available here" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_figures_command(runs, capsys):
    assert cli.main(["figures", str(runs / "ddpm-time"), "--steps", "2"]) == 0
    assert "figures to" in capsys.readouterr().out
    assert (runs / "ddpm-time" / "figures" / "loss.png").is_file()


def test_module_entry_point_runs():
    r = subprocess.run(
        [sys.executable, "-m", "training", "flow-class", "--epochs", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.strip().endswith("must be positive, got -1")
