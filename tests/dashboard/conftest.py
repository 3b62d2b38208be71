"""Dashboard test fixtures: tiny runs made by the real training CLI, once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.tiny_run import tiny_args

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
TINY = tiny_args("--steps", "4", "--sample-steps", "3", "--device", "cpu")
EXPERIMENTS = ("flow-class", "ddpm-class")


def pytest_collection_modifyitems(items):
    """Keep the dashboard tests that use the trained runs on one xdist worker, so the runs are
    trained once; the others (dashboard.jobs, which start their own runs) go anywhere."""
    for item in items:
        if "tests/dashboard" in str(item.fspath) and "test_jobs.py" not in str(item.fspath):
            item.add_marker(pytest.mark.xdist_group("dashboard"))


def train_runs(runs_dir: Path) -> Path:
    """Train each experiment in EXPERIMENTS (4 steps, D=4) into runs_dir, in parallel."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "training", exp, "--runs-dir", str(runs_dir), *TINY],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for exp in EXPERIMENTS
    ]
    for exp, p in zip(EXPERIMENTS, procs, strict=False):
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"training {exp} failed:\n{out[-2000:]}"
    return runs_dir


def evaluate(run_dir: Path) -> None:
    """The real evaluation (evaluation.json) with a tiny classifier and few samples."""
    from training.classifier import ClassifierConfig
    from training.evaluation import evaluate_run

    tiny = ClassifierConfig(width=4, feature_dim=16, passes=0.05, max_steps=3, batch_size=64)
    evaluate_run(run_dir, (0, 5), per_class=3, steps=(2,), classifier_config=tiny)


@pytest.fixture(scope="session")
def lab_runs(tmp_path_factory) -> Path:
    """A runs folder with a finished tiny flow-class (evaluated) and ddpm-class run."""
    runs = train_runs(tmp_path_factory.mktemp("runs"))
    evaluate(runs / "flow-class")
    return runs


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


@pytest.fixture
def lab(app, lab_runs):
    """The Sampler lab on the MNIST backend (the tiny flow-class run)."""
    at = app(lab_runs).run()
    at.switch_page("screens/sampler_lab.py").run()
    at.selectbox(key="lab_run").set_value("flow-class").run()
    return at


def png(array) -> bytes:
    """PNG bytes of a uint8 array (H, W) or (H, W, 3)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def no_errors(at) -> None:
    """No exception and no st.error in the current page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
