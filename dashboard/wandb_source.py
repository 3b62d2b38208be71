"""Runs of a W&B project, and pulling a run's checkpoint artifact into the local runs folder.

Used only when a W&B API key and a project are configured and W&B is not offline/disabled; every
call goes through `wandb.Api` with a timeout, so a page never blocks without a key. The network
cannot be reached in the tests: tests/dashboard/test_wandb_pull.py stands in for `wandb.Api` and
tests the pull from the download on.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import streamlit as st

from samplers.app.files import replace_folder
from training.checkpoints import checkpoint_name
from training.config import RunConfig
from training.runs import safe_run_dir, write_json
from training.tracking import key_configured

API_TIMEOUT_S = 20


def unavailable_reason(project: str) -> str | None:
    """Why the W&B panel is off (None when it can be used)."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return f"W&B is {os.environ['WANDB_MODE']} (WANDB_MODE): local runs only."
    if not key_configured():
        return "No W&B API key: run `wandb login` (or set WANDB_API_KEY) to list and pull runs."
    if not project:
        return "Set a W&B project (entity/project) in the sidebar to list and pull its runs."
    return None


def _api():
    import wandb

    return wandb.Api(timeout=API_TIMEOUT_S)


@st.cache_data(ttl=60, show_spinner="Listing W&B runs...")
def list_wandb_runs(project: str) -> list[dict[str, Any]]:
    """Runs of `project` ("entity/project") as plain dicts, newest first (network)."""
    return [
        {
            "name": r.name,
            "id": r.id,
            "state": r.state,
            "tags": list(r.tags),
            "created": r.created_at,
            "url": r.url,
            "experiment": r.config.get("experiment"),
        }
        for r in _api().runs(project, order="-created_at", per_page=100)
    ]


def _epoch(artifact) -> int:
    """The epoch of a checkpoint artifact, from the `epoch-N` alias the trainer gives it
    (training.tracking.WandbRun.log_checkpoint); ValueError without one."""
    alias = next((a for a in artifact.aliases if re.fullmatch(r"epoch-\d+", a)), None)
    if alias is None:
        raise ValueError(
            f"W&B artifact {getattr(artifact, 'name', '?')!r} has no epoch-N alias: "
            "not a checkpoint the lab logged"
        )
    return int(alias.split("-")[1])


def pull_checkpoint(project: str, run_id: str, runs_root: Path) -> Path:
    """Download the newest model artifact of W&B run `run_id` into runs_root/<run name>/.

    Writes checkpoints/epoch-NNNN/ (downloaded to a temporary folder, then renamed) and, when the
    run is new locally, config.json and summary.json from the W&B run. Returns the checkpoint.
    """
    run = _api().run(f"{project}/{run_id}")
    models = [a for a in run.logged_artifacts() if a.type == "model"]
    if not models:
        raise ValueError(f"W&B run {run.name!r} has no model artifact to pull")
    artifact = next((a for a in models if "latest" in a.aliases), models[-1])
    RunConfig.from_json(dict(run.config), f"W&B run {run.name!r}")  # ConfigError: not the lab's
    run_dir = safe_run_dir(runs_root, run.name)
    final = run_dir / "checkpoints" / checkpoint_name(_epoch(artifact))
    tmp = final.parent / f".tmp-pull-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    artifact.download(root=str(tmp))
    replace_folder(tmp, final)
    if not (run_dir / "config.json").exists():
        write_json(run_dir / "config.json", dict(run.config))
    if not (run_dir / "summary.json").exists():
        write_json(
            run_dir / "summary.json",
            {
                "status": "finished" if run.state == "finished" else run.state,
                "wandb": {"mode": "online", "project": project, "id": run.id, "url": run.url},
            },
        )
    return final
