"""Exact resume: a run stopped after epoch k and resumed ends bit-identical to an uninterrupted
one; runs and checkpoints written before the options/plan split resume too."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.fixtures.tiny_run import tiny_args
from training import cli
from training.checkpoints import latest_checkpoint, list_checkpoints
from training.config import make_options
from training.runs import load_run_config, read_metrics, read_summary, write_json

TINY = tiny_args("--steps", "6")


def _train(runs, experiment, name, *extra, device="cpu"):
    return cli.main(
        [experiment, *TINY, "--device", device, "--runs-dir", str(runs), "--name", name, *extra]
    )


def _files(run, name):
    return {c.epoch: (c.path / name).read_bytes() for c in list_checkpoints(run)}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize(
    "experiment, extra",
    [
        ("flow-class", []),
        ("ddpm-time", ["--no-scheduler"]),
        ("ddpm-class", ["--recipe", "fast", "--warmup-steps", "2"]),  # per-step LambdaLR + EMA
    ],
)
def test_stopped_and_resumed_run_is_bit_identical(tmp_path, experiment, extra, device):
    assert _train(tmp_path, experiment, "full", *extra, device=device) == 0
    assert _train(tmp_path, experiment, "cut", *extra, "--stop-after", "1", device=device) == 0
    cut = tmp_path / "cut"
    assert latest_checkpoint(cut).epoch == 1 and read_summary(cut)["status"] == "running"
    # a kill mid-write leaves a partial metrics line and a temporary checkpoint folder behind
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.')
    (cut / "checkpoints" / ".tmp-epoch-0002-99999").mkdir()
    assert len(read_metrics(cut)) == 2

    assert _train(tmp_path, experiment, "cut", *extra, "--resume", device=device) == 0
    full = tmp_path / "full"
    assert read_summary(cut)["status"] == "finished"
    assert _files(cut, "model.safetensors")[3] == _files(full, "model.safetensors")[3]
    if extra:  # no-scheduler and the fast recipe keep an EMA of the weights: resumed exactly too
        assert _files(cut, "ema.safetensors")[3] == _files(full, "ema.safetensors")[3]
    a, b = (
        load_file(full / "checkpoints/epoch-0003/model.safetensors"),
        load_file(cut / "checkpoints/epoch-0003/model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)

    def strip(rows):
        return [{k: r[k] for k in ("step", "epoch", "loss", "lr", "loss_t_bin")} for r in rows]

    assert strip(read_metrics(cut)) == strip(read_metrics(full))
    assert not list((cut / "checkpoints").glob(".tmp-*"))


def test_resume_can_extend_the_length_but_not_change_the_training(tmp_path, capsys):
    assert _train(tmp_path, "flow-time", "run", "--stop-after", "1") == 0
    assert (
        cli.main(
            ["flow-time", "--runs-dir", str(tmp_path), "--name", "run", "--resume", "--lr", "0.5"]
        )
        == 2
    )
    assert "--resume keeps the stored settings" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "flow-time",
                "--runs-dir",
                str(tmp_path),
                "--name",
                "run",
                "--resume",
                "--steps",
                "4",
                "--wandb-mode",
                "disabled",
            ]
        )
        == 0
    )
    s = read_summary(tmp_path / "run")
    assert (s["status"], s["step"]) == ("finished", 4)


def test_a_longer_resume_keeps_the_cosine_where_it_ended(tmp_path):
    """The fast recipe's cosine spans the run's first length; an extension runs at its final rate
    (as the course's ExponentialLR keeps its per-epoch factor), and the record says so."""
    fast = ["--recipe", "fast", "--warmup-steps", "0", "--lr", "0.01"]
    assert _train(tmp_path, "flow-class", "run", *fast, "--stop-after", "1") == 0
    assert (
        cli.main(
            [
                "flow-class",
                "--runs-dir",
                str(tmp_path),
                "--name",
                "run",
                "--resume",
                "--steps",
                "12",
                "--wandb-mode",
                "disabled",
            ]
        )
        == 0
    )
    cfg = load_run_config(tmp_path / "run")
    assert (cfg.plan.total_steps, cfg.plan.lr_decay_steps, cfg.options.steps) == (12, 6, 12)
    lrs = {r["step"]: r["lr"] for r in read_metrics(tmp_path / "run")}
    final = 0.01 * cfg.options.lr_final_ratio
    assert lrs[4] > final and all(lrs[s] == pytest.approx(final) for s in range(7, 13))


LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_runs" / "main-run"


def test_a_run_of_the_layout_before_the_plan_loads_without_being_rewritten():
    """tests/fixtures/legacy_runs/main-run: `flow-class --recipe fast --no-scheduler --hidden 4
    --batch-size 8 --period-steps 2 --steps 4 --stop-after 1 --mixed-precision no` trained by
    the lab before config.json split options from plan: a flat config.json (`period_steps`,
    `extra`, the --no-scheduler help text), global RNG states in state.pt."""
    before = (LEGACY / "config.json").read_bytes()
    assert b'"extra"' in before and b"no_scheduler_compensation" in before
    state = torch.load(LEGACY / "checkpoints/epoch-0001/state.pt", weights_only=True)
    assert "rng" in state
    cfg = load_run_config(LEGACY)
    assert (LEGACY / "config.json").read_bytes() == before
    o, p = cfg.options, cfg.plan
    assert (o.experiment, o.recipe, o.scheduler, o.ema_decay, o.steps, o.epochs) == (
        "flow-class",
        "fast",
        False,
        0.999,
        4,
        None,
    )
    assert (p.epoch_steps, p.total_steps, p.lr_gamma, p.lr_decay_steps) == (2, 4, 1.0, 4)
    assert (p.dataset, p.train_size, p.world_size, p.device, p.mixed_precision) == (
        "mnist-5k",
        4500,
        1,
        "cpu",
        "no",
    )
    # the same options, as this version's CLI builds them
    rebuilt = make_options(
        "flow-class",
        recipe="fast",
        no_scheduler=True,
        dataset="mnist-5k",
        hidden=4,
        batch_size=8,
        steps=4,
        preview_steps=2,
        log_every=1,
        wandb_mode="disabled",
        mixed_precision="no",
        name="main-run",
    )
    assert o == rebuilt


def test_a_checkpoint_of_the_layout_before_the_plan_resumes_as_one_of_today(tmp_path, capsys):
    """The legacy run resumed as it is, and resumed after its config.json was rewritten in
    today's layout: the same weights and EMA, bit for bit (its state.pt's RNG states unused)."""
    old, new = shutil.copytree(LEGACY, tmp_path / "old"), shutil.copytree(LEGACY, tmp_path / "new")
    write_json(new / "config.json", load_run_config(old).to_json())
    assert b'"plan"' in (new / "config.json").read_bytes()
    for run in (old, new):
        resume = ["--runs-dir", str(run.parent), "--name", run.name, "--resume"]
        # --mixed-precision: a resume may change it; auto, as the rest of the suite (Accelerate
        # keeps one precision a process)
        assert (
            cli.main(["flow-class", *resume, "--device", "cpu", "--mixed-precision", "auto"]) == 0
        )
        assert read_summary(run)["status"] == "finished" and read_summary(run)["step"] == 4
        assert [c.epoch for c in list_checkpoints(run)] == [1, 2]
    for name in ("model.safetensors", "ema.safetensors"):
        assert _files(old, name)[2] == _files(new, name)[2]
    assert strip_rows(old) == strip_rows(new)
    assert b'"plan"' in (old / "config.json").read_bytes()  # a resume writes today's layout,
    assert capsys.readouterr().err.count("has the layout of an earlier version") == 1  # and says so


def strip_rows(run):
    return [{k: r[k] for k in ("step", "epoch", "loss", "lr")} for r in read_metrics(run)]
