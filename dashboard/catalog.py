"""The runs the dashboard knows about: every run directory under the configured runs folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.runs import RunInfo, list_runs, read_config
from training.tracking import run_tags


@dataclass(frozen=True)
class Run:
    info: RunInfo
    config: dict[str, Any]
    label: str  # unique among the listed runs
    tags: tuple[str, ...]

    @property
    def path(self) -> Path:
        return self.info.path


def catalog_tags(config: dict[str, Any], bundled: bool) -> tuple[str, ...]:
    """The tags W&B gets for a run (training.tracking.run_tags), and 'bundled'."""
    return tuple(dict.fromkeys(run_tags(config) + (["bundled"] if bundled else [])))


def find_runs(roots: tuple[Path, ...], bundled_root: Path | None = None) -> list[Run]:
    """Runs of every root, newest first; a name found in two roots is labelled with its folder."""
    found = []
    for root in roots:
        bundled = bundled_root is not None and root.resolve() == bundled_root.resolve()
        for info in list_runs(root):
            try:
                config = read_config(info.path)
            except (OSError, ValueError):  # deleted or rewritten since it was listed
                continue
            found.append((info, config, bundled))
    names = [info.name for info, _, _ in found]
    return [
        Run(
            info,
            config,
            info.name if names.count(info.name) == 1 else f"{info.name} ({info.path.parent})",
            catalog_tags(config, bundled),
        )
        for info, config, bundled in found
    ]


def no_runs_message(roots: tuple[Path, ...]) -> str:
    folders = ", ".join(f"`{r}`" for r in roots)
    return (
        f"No runs yet in {folders}: train one with `python -m training flow-class` "
        "(add `--dataset mnist-5k --epochs 1` for a quick one), then refresh."
    )
