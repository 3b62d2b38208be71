"""Pulling a W&B checkpoint artifact into the local runs folder (dashboard.wandb_source).

The network cannot be reached here, so `wandb.Api` is replaced by a stand-in whose artifact
"downloads" a real checkpoint of a tiny trained run; everything after the download (the folder
layout, the atomic rename, the run record, the run-name guard) is the real code.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from dashboard import wandb_source
from training.checkpoints import list_checkpoints
from training.pretrained import load_lab_model
from training.runs import ConfigError


@dataclass
class FakeArtifact:
    source: Path  # a checkpoint folder that plays the artifact's files
    aliases: list[str]
    type: str = "model"

    def download(self, root: str) -> str:
        shutil.copytree(self.source, root)
        return root


@dataclass
class FakeRun:
    name: str
    config: dict
    artifacts: list
    id: str = "abc123"
    state: str = "finished"
    url: str = "https://wandb.ai/lab/diffusion-lab/runs/abc123"

    def logged_artifacts(self) -> list:
        return self.artifacts


@pytest.fixture
def wandb_run(monkeypatch, lab_runs):
    """Installs a stand-in W&B API serving one run; returns that run to edit."""
    local = lab_runs / "flow-class"
    ckpt = list_checkpoints(local)[-1]
    run = FakeRun(
        "flow-class",
        json.loads((local / "config.json").read_text()),
        [FakeArtifact(ckpt.path, ["latest", f"epoch-{ckpt.epoch}"])],
    )
    monkeypatch.setattr(wandb_source, "_api", lambda: SimpleNamespace(run=lambda path: run))
    return run, ckpt.epoch


def test_pulled_checkpoint_makes_a_loadable_local_run(wandb_run, tmp_path):
    run, epoch = wandb_run
    path = wandb_source.pull_checkpoint("lab/diffusion-lab", run.id, tmp_path)
    assert path == tmp_path / "flow-class" / "checkpoints" / f"epoch-{epoch:04d}"
    assert not list(path.parent.glob(".tmp-pull-*"))  # downloaded aside, then renamed
    summary = json.loads((tmp_path / "flow-class" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["wandb"]["id"] == run.id
    lab = load_lab_model(tmp_path / "flow-class")  # checksums verified
    assert lab.kind == "flow" and lab.class_conditional


def test_pull_again_replaces_the_checkpoint_and_keeps_the_local_record(wandb_run, tmp_path):
    run, _ = wandb_run
    first = wandb_source.pull_checkpoint("lab/diffusion-lab", run.id, tmp_path)
    (tmp_path / "flow-class" / "summary.json").write_text('{"status": "finished", "note": "mine"}')
    second = wandb_source.pull_checkpoint("lab/diffusion-lab", run.id, tmp_path)
    assert first == second and (second / "meta.json").is_file()
    assert json.loads((tmp_path / "flow-class" / "summary.json").read_text())["note"] == "mine"


def test_run_without_a_model_artifact_is_a_clear_error(wandb_run, tmp_path):
    run, _ = wandb_run
    run.artifacts = []
    with pytest.raises(ValueError, match="has no model artifact"):
        wandb_source.pull_checkpoint("lab/diffusion-lab", run.id, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../escape", "/etc", ".hidden"])
def test_a_remote_run_name_cannot_leave_the_runs_folder(wandb_run, tmp_path, name):
    run, _ = wandb_run
    run.name = name
    with pytest.raises(ConfigError, match="invalid run name"):
        wandb_source.pull_checkpoint("lab/diffusion-lab", run.id, tmp_path / "runs")
    assert not (tmp_path / "escape").exists()


def test_a_run_the_lab_did_not_train_is_refused_before_any_download(wandb_run, tmp_path):
    run, _ = wandb_run
    run.config = {"learning_rate": 0.1}  # another project's run
    with pytest.raises(ConfigError, match="not a run config"):
        wandb_source.pull_checkpoint("lab/diffusion-lab", run.id, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_artifact_without_its_epoch_alias_is_refused(wandb_run, tmp_path):
    run, _ = wandb_run
    run.artifacts[0].aliases = ["latest"]
    with pytest.raises(ValueError, match="has no epoch-N alias"):
        wandb_source.pull_checkpoint("lab/diffusion-lab", run.id, tmp_path)
    assert list(tmp_path.iterdir()) == []
