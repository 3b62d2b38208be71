"""NaN / inf loss: the run stops naming the step, keeps the last good checkpoint (never one with
non-finite weights), is marked failed in summary.json and in W&B, and exits with status 1."""

import math
from dataclasses import replace

import pytest
import torch
from reliability_helpers import epochs, train, weights

from tests.fixtures.tiny_run import tiny_args
from training.config import TrainingDiverged
from training.data import Batches
from training.runs import load_run_config, read_metrics, read_summary
from training.tracking import WandbRun
from training.trainer import Trainer


@pytest.fixture
def wandb_calls(monkeypatch):
    """What the trainer sent to W&B (the run itself is real, offline)."""
    calls = []
    for name in ("update_summary", "finish"):
        real = getattr(WandbRun, name)

        def spy(self, *a, _real=real, _name=name, **kw):
            calls.append((_name, a, kw))
            return _real(self, *a, **kw)

        monkeypatch.setattr(WandbRun, name, spy)
    return calls


@pytest.mark.slow  # starts a real (offline) W&B service
def test_a_nan_batch_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys, wandb_calls
):
    real = Batches.batch

    def batch(self, step):  # step is 0-based: the 7th step gets a corrupt image
        x, y = real(self, step)
        return (
            x.index_fill(0, torch.tensor([0], device=x.device), float("nan")) if step == 6 else x
        ), y

    monkeypatch.setattr(Batches, "batch", batch)
    assert train(tmp_path, "nan", "--steps", "10", tiny=tiny_args(wandb="offline")) == 1
    err = capsys.readouterr().err
    assert "python -m training: error: the loss became NaN or infinite at step 7 (epoch 4)" in err
    run = tmp_path / "nan"
    assert f"Last good checkpoint: {run / 'checkpoints/epoch-0003'}" in err
    assert epochs(run) == [1, 2, 3] and not list((run / "checkpoints").glob(".*"))
    assert all(v.isfinite().all() for p in (1, 2, 3) for v in weights(run, p).values())
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) for r in read_metrics(run))
    s = read_summary(run)
    assert s["status"] == "failed" and "at step 7" in s["error"] and s["step"] == 6
    assert s["wandb"]["mode"] == "offline" and s["wandb"]["sync_command"].startswith("wandb sync")
    assert ("update_summary", ({"status": "failed", "error": s["error"]},), {}) in wandb_calls
    assert ("finish", (1,), {}) in wandb_calls


def test_a_huge_learning_rate_fails_before_any_checkpoint(tmp_path, capsys):
    assert train(tmp_path, "lr", "--steps", "6", "--lr", "1e12") == 1
    err = capsys.readouterr().err
    assert (
        "the loss became NaN or infinite at step 2 (epoch 1)" in err
        and "Last good checkpoint: none" in err
    )
    assert "Try a lower --lr (now 1e+12)" in err
    assert epochs(tmp_path / "lr") == [] and read_summary(tmp_path / "lr")["status"] == "failed"


def test_non_finite_weights_are_never_written(tmp_path):
    assert train(tmp_path, "w", "--steps", "2") == 0
    trainer = Trainer(replace(load_run_config(tmp_path / "w").options, name="w2"), tmp_path)
    with torch.no_grad():
        next(trainer.model.parameters())[0] = float("inf")
    with pytest.raises(
        TrainingDiverged,
        match="weights became NaN or infinite by step 0; checkpoint epoch-0001 was not written",
    ):
        trainer._save(1)
    assert epochs(tmp_path / "w2") == []
