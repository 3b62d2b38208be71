"""Widgets shared by the pages: the user-error boundary and the run and checkpoint pickers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from training.checkpoints import Checkpoint, checkpoint_folders, list_checkpoints
from training.config import GUIDANCE_SCALES, PER_CLASS
from training.evaluation_record import read_evaluation

from . import jobs
from .catalog import Run, find_runs, no_runs_message
from .settings import Settings

# Errors a user can cause (bad upload, corrupt checkpoint, deleted run, missing access...): the
# lab raises these with a message meant for people. Anything else is a bug and propagates.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, NotImplementedError)
KEEP = {"persist_state": "session"}  # a widget value that outlasts a visit to another page


@contextmanager
def user_errors(action: str) -> Iterator[None]:
    """Show a user-caused error as one st.error line instead of a traceback."""
    try:
        yield
    except USER_ERRORS as e:
        st.error(f"{action}: {e}")


def runs_or_stop(settings: Settings) -> list[Run]:
    """The listed runs; with none, an st.info on how to train one and the page stops."""
    runs = find_runs(settings.runs_roots, settings.bundled)
    if not runs:
        st.info(no_runs_message(settings.runs_roots))
        st.stop()
    return runs


def _picker(label: str, options: list[str], key: str, **kwargs) -> str:
    """A selectbox that starts at the first option (the newest) until the user picks another;
    that pick is kept across pages while it remains among the options."""
    picked = f"{key}__picked"

    def remember() -> None:
        st.session_state[picked] = st.session_state[key]

    last = st.session_state.get(picked)
    index = options.index(last) if last in options else 0
    return st.selectbox(label, options, index=index, key=key, on_change=remember, **kwargs)


def run_select(runs: Sequence[Run], key: str, *, label: str = "Run") -> Run:
    """A selectbox over runs with checkpoints (all runs when none has one), newest first."""
    usable = [r for r in runs if r.info.num_checkpoints] or list(runs)
    by_label = {r.label: r for r in usable}
    status = {
        lab: jobs.run_status(r.path) if r.path.is_dir() else r.info.status
        for lab, r in by_label.items()
    }  # "interrupted" when its process died
    choice = _picker(
        label,
        list(by_label),
        key,
        format_func=lambda lab: f"{lab} · {by_label[lab].info.experiment} · {status[lab]}",
    )
    return by_label[choice]


def checkpoint_select(run: Run, key: str) -> Checkpoint | None:
    """A selectbox over a run's checkpoints (latest first); st.info and None when it has none."""
    ckpts = list_checkpoints(run.path)[::-1]
    names = [c.path.name for c in ckpts]
    unreadable = [p.name for p in checkpoint_folders(run.path) if p.name not in names]
    if unreadable:
        st.warning(
            f"Run `{run.label}`: left out {', '.join(unreadable)} (meta.json missing or corrupt)."
        )
    if not ckpts:
        st.info(f"Run `{run.label}` has no complete checkpoint yet (it saves one per epoch).")
        return None
    name = _picker("Checkpoint", names, f"{key}_{run.label}")
    return ckpts[names.index(name)]


def model_label(run: Run, ckpt: Checkpoint) -> str:
    """How a result names the model that made it: "run · checkpoint"."""
    return f"{run.label} · {ckpt.path.name}"


def evaluate_controls(run_dir: Path, key: str) -> bool:
    """Evaluate button of a run (a background `python -m training evaluate`), or the running
    evaluation's log tail; True while one runs."""
    job = jobs.live_job(run_dir, "evaluate")
    if job is not None:
        st.info(f"Evaluating {run_dir.name} (pid {job.pid}); the results appear on the Runs page.")
        st.code(jobs.tail(job.log, 8) or "(starting)", language=None, wrap_lines=True)
        return True
    with st.expander(f"Evaluate {run_dir.name}"):
        c = st.columns(4)
        per_class = c[0].number_input(
            "Samples per class", 1, 1000, PER_CLASS, key=f"{key}_per_class"
        )
        repeats = c[1].number_input(
            "Repeats",
            1,
            20,
            1,
            key=f"{key}_repeats",
            help="sample sets a guidance scale, scored by their mean: one "
            "set of 500 digits varies by about 15%, so compare runs "
            "with 4",
        )
        steps = c[2].number_input("Sampler steps (0: the run's)", 0, 1000, 0, key=f"{key}_steps")
        st.caption(
            f"Class accuracy and Fréchet distance at guidance "
            f"{', '.join(map(str, GUIDANCE_SCALES))}, against "
            "real digits (a classifier is trained once per dataset and cached)."
        )
        if c[3].button("Evaluate", key=f"{key}_start"):
            with user_errors("Cannot evaluate"):
                job = jobs.start_evaluation(
                    jobs.EvalRequest(run_dir, int(per_class), int(steps) or None, int(repeats))
                )
                st.toast(f"Evaluating {run_dir.name} (pid {job.pid}).")
                return True
    last = jobs.find(run_dir, "evaluate")
    if last is not None and not read_evaluation(run_dir).cells:
        st.warning(f"The last evaluation of {run_dir.name} left no result; its log ends:")
        st.code(jobs.tail(last.log, 8), language=None, wrap_lines=True)
    return False
