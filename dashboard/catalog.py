"""The runs the dashboard knows about: every run folder under the configured runs folders, each
read once (training.runs.read_run) and labelled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.runs import Run, list_runs
from training.tracking import run_tags


@dataclass(frozen=True)
class LabeledRun:
    """A run as the pages list it: read once per page render, with a unique label and tags."""

    run: Run
    label: str  # unique among the listed runs
    tags: tuple[str, ...]

    @property
    def path(self) -> Path:
        return self.run.path


def catalog_tags(run: Run, bundled: bool) -> tuple[str, ...]:
    """The tags W&B gets for a run (training.tracking.run_tags), and 'bundled'; none for a run
    whose config cannot be read."""
    tags = run_tags(run.config) if run.config is not None else []
    return tuple(dict.fromkeys(tags + (["bundled"] if bundled else [])))


def find_runs(roots: tuple[Path, ...], bundled_root: Path | None = None) -> list[LabeledRun]:
    """Runs of every root, newest first per root, bad ones included (with their problem); a name
    found in two roots is labelled with its folder."""
    found = []
    for root in roots:
        bundled = bundled_root is not None and root.resolve() == bundled_root.resolve()
        found += [(run, bundled) for run in list_runs(root)]
    names = [run.name for run, _ in found]
    return [
        LabeledRun(
            run,
            run.name if names.count(run.name) == 1 else f"{run.name} ({run.path.parent})",
            catalog_tags(run, bundled),
        )
        for run, bundled in found
    ]


def no_runs_message(roots: tuple[Path, ...]) -> str:
    folders = ", ".join(f"`{r}`" for r in roots)
    return (
        f"No runs yet in {folders}: train one with `python -m training flow-class` "
        "(add `--dataset mnist-5k --epochs 1` for a quick one), then refresh."
    )
