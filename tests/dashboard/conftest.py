"""Dashboard test fixtures: tiny runs made by the real training CLI, once per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
TINY = ["--dataset", "mnist-5k", "--hidden", "4", "--batch-size", "8", "--steps", "4",
        "--period-steps", "2", "--log-every", "1", "--sample-steps", "3", "--wandb-mode", "disabled",
        "--device", "cpu"]
EXPERIMENTS = ("flow-class", "ddpm-class")


def pytest_collection_modifyitems(items):
    """Keep the dashboard tests on one xdist worker, so the runs are trained once."""
    for item in items:
        if "tests/dashboard" in str(item.fspath):
            item.add_marker(pytest.mark.xdist_group("dashboard"))


def train_runs(runs_dir: Path) -> Path:
    """Train each experiment in EXPERIMENTS (4 steps, D=4) into runs_dir, in parallel."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    procs = [subprocess.Popen([sys.executable, "-m", "training", exp, "--runs-dir", str(runs_dir),
                               *TINY], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for exp in EXPERIMENTS]
    for exp, p in zip(EXPERIMENTS, procs):
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"training {exp} failed:\n{out[-2000:]}"
    return runs_dir


@pytest.fixture(scope="session")
def lab_runs(tmp_path_factory) -> Path:
    """A runs folder with a finished tiny flow-class and ddpm-class run."""
    return train_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def corrupt_runs(lab_runs, tmp_path_factory) -> Path:
    """A runs folder with one run whose latest weights file is garbage."""
    root = tmp_path_factory.mktemp("corrupt")
    run = shutil.copytree(lab_runs / "flow-class", root / "broken")
    for weights in (run / "checkpoints").glob("*/model.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    return root


@pytest.fixture
def app(monkeypatch):
    """AppTest factory: app(runs_dir) -> an AppTest of dashboard/app.py on that runs folder."""
    from streamlit.testing.v1 import AppTest

    def make(runs_dir: Path, **env: str):
        monkeypatch.setenv("DIFFUSION_LAB_RUNS", str(runs_dir))
        monkeypatch.setenv("DIFFUSION_LAB_BUNDLED_RUNS", "")
        monkeypatch.setenv("DIFFUSION_LAB_DEVICE", "cpu")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return AppTest.from_file(APP, default_timeout=30)

    return make


def no_errors(at) -> None:
    """No exception and no st.error in the current page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
