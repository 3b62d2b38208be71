"""Where the dashboard looks for runs and models: environment defaults and the sidebar.

Environment (all optional):
    DIFFUSION_LAB_RUNS           runs folders, separated by ',' or os.pathsep (default: runs)
    DIFFUSION_LAB_WANDB_PROJECT  W&B "entity/project" to list and pull runs from
    DIFFUSION_LAB_DEVICE         auto (default), cpu, cuda or mps
    DIFFUSION_LAB_BUNDLED_RUNS   the bundled runs folder, always listed when it exists
                                 (default: training/pretrained_runs; empty: none)
    DIFFUSION_LAB_IF_MODEL       DeepFloyd IF stage 1: "XL" | "L" | "M", a hub id or a local folder
    DIFFUSION_LAB_IF_STAGE2      DeepFloyd IF stage 2 (upsampling): a hub id or a local folder
    DIFFUSION_LAB_MAX_TRAINING   training runs the Train page lets run at once (default 1);
                                 further starts wait in the queue
    DIFFUSION_LAB_ALLOW_REMOTE   1: the pages may start and stop processes while the server
                                 listens beyond this machine (default: they refuse to)
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from samplers.app.devices import DEVICES, resolve_device

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLED_RUNS = REPO / "training" / "pretrained_runs"


@dataclass(frozen=True)
class Settings:
    runs_roots: tuple[Path, ...]  # user folders first, then the bundled one when it exists
    bundled: Path | None  # the bundled runs folder when it exists
    wandb_project: str  # "" when not configured
    device: str  # a torch device name (auto resolved)
    max_training: int = 1  # concurrent training runs started from the Train page
    exposure: str | None = None  # why processes may not be started or stopped here (exposure())

    @property
    def write_root(self) -> Path:
        """Where pulled runs are written: the first user runs folder."""
        return self.runs_roots[0]


def split_paths(text: str) -> list[Path]:
    """'a, b:c' -> [a, b, c] (',' or os.pathsep separated), blanks dropped."""
    return [
        Path(p.strip()).expanduser()
        for p in re.split(f"[,{re.escape(os.pathsep)}]", text)
        if p.strip()
    ]


def bundled_runs() -> Path | None:
    path = os.environ.get("DIFFUSION_LAB_BUNDLED_RUNS", str(DEFAULT_BUNDLED_RUNS))
    return Path(path) if path and Path(path).is_dir() else None


def deepfloyd_options() -> dict[str, str]:
    """`DeepFloydBackend.from_pretrained` keywords from DIFFUSION_LAB_IF_MODEL / _IF_STAGE2 (unset:
    its defaults)."""
    env = {"model": "DIFFUSION_LAB_IF_MODEL", "stage2": "DIFFUSION_LAB_IF_STAGE2"}
    return {k: os.environ[v] for k, v in env.items() if os.environ.get(v)}


def max_training() -> int:
    """DIFFUSION_LAB_MAX_TRAINING as a positive int (1 when unset or not a positive number)."""
    text = os.environ.get("DIFFUSION_LAB_MAX_TRAINING", "1").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1


def is_loopback(address: str) -> bool:
    """Whether a server.address binds to this machine only ("" binds every interface)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def exposure() -> str | None:
    """Why the pages must not start or stop processes: the server listens on an address other
    than loopback without DIFFUSION_LAB_ALLOW_REMOTE=1; None when it is safe."""
    address = str(st.get_option("server.address") or "")
    if is_loopback(address) or os.environ.get("DIFFUSION_LAB_ALLOW_REMOTE") == "1":
        return None
    where = f"on {address}" if address else "on every network interface"
    return (
        f"This dashboard listens {where}, so anyone who can reach it could run commands here: "
        "starting and stopping training and evaluations is switched off. Serve it with "
        "`make dashboard` (127.0.0.1), or set DIFFUSION_LAB_ALLOW_REMOTE=1 to allow it."
    )


def sidebar() -> Settings:
    """Render the settings in the sidebar and return them (call once per run, from app.py)."""
    with st.sidebar:
        st.subheader("Settings")
        runs = st.text_input(
            "Runs folders",
            os.environ.get("DIFFUSION_LAB_RUNS", "runs"),
            key="settings_runs",
            help="Folders holding run directories, "
            "separated by commas. The bundled runs are always listed.",
        )
        project = st.text_input(
            "W&B project",
            os.environ.get("DIFFUSION_LAB_WANDB_PROJECT", ""),
            key="settings_wandb",
            placeholder="entity/project",
            help="Lists and pulls runs from W&B when an API key is configured.",
        )
        env_device = os.environ.get("DIFFUSION_LAB_DEVICE", "auto")
        device = st.selectbox(
            "Device",
            DEVICES,
            key="settings_device",
            index=DEVICES.index(env_device) if env_device in DEVICES else 0,
            help="where the Studio and the Sampler lab run their models "
            "(a training run takes the Train page's own device)",
        )
    roots = split_paths(runs) or [Path("runs")]
    bundled = bundled_runs()
    if bundled is not None and bundled.resolve() not in {r.resolve() for r in roots}:
        roots.append(bundled)
    settings = Settings(
        tuple(roots),
        bundled,
        project.strip(),
        device if device != "auto" else str(resolve_device("auto")),
        max_training(),
        exposure(),
    )
    st.session_state["settings"] = settings
    return settings


def current() -> Settings:
    """The settings app.py rendered in this run."""
    return st.session_state["settings"]
