"""Two CPU processes through torchrun (gloo): each trains its half of the global batch, rank 0
writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.fixtures.tiny_run import tiny_args
from training.checkpoints import list_checkpoints
from training.runs import load_run_config, read_metrics, read_summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_cpu_run_with_torchrun(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "-m",
        "training",
        "flow-class",
        *tiny_args("--steps", "4", wandb=None),
        "--device",
        "cpu",
        "--runs-dir",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "flow-class"
    assert load_run_config(run).plan.world_size == 2
    assert r.stdout.count("finished at step 4") == 1  # only rank 0 reports
    assert read_summary(run)["status"] == "finished"
    assert [row["step"] for row in read_metrics(run)] == [1, 2, 3, 4]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert [c.epoch for c in list_checkpoints(run)] == [1, 2]
    weights = load_file(run / "checkpoints/epoch-0002/model.safetensors")
    assert all(v.isfinite().all() for v in weights.values())
    assert json.loads((run / "checkpoints/epoch-0002/meta.json").read_text())["step"] == 4
