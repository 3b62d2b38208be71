"""Exact resume: a run stopped after period k and resumed ends bit-identical to an uninterrupted
one."""

import pytest
import torch
from safetensors.torch import load_file

from training import cli
from training.checkpoints import latest_checkpoint, list_checkpoints
from training.runs import load_run_config, read_metrics, read_summary

TINY = [
    "--dataset",
    "mnist-5k",
    "--hidden",
    "4",
    "--batch-size",
    "8",
    "--period-steps",
    "2",
    "--preview-steps",
    "2",
    "--log-every",
    "1",
    "--wandb-mode",
    "disabled",
    "--steps",
    "6",
]


def _train(runs, experiment, name, *extra, device="cpu"):
    return cli.main(
        [experiment, *TINY, "--device", device, "--runs-dir", str(runs), "--name", name, *extra]
    )


def _files(run, name):
    return {c.period: (c.path / name).read_bytes() for c in list_checkpoints(run)}


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
    assert latest_checkpoint(cut).period == 1 and read_summary(cut)["status"] == "running"
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
    assert (cfg.total_steps, cfg.lr_decay_steps) == (12, 6)
    lrs = {r["step"]: r["lr"] for r in read_metrics(tmp_path / "run")}
    final = 0.01 * cfg.lr_final_ratio
    assert lrs[4] > final and all(lrs[s] == pytest.approx(final) for s in range(7, 13))
