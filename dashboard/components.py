"""Widgets shared by the pages: the user-error boundary and the run and checkpoint pickers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import streamlit as st

from training.checkpoints import Checkpoint
from training.config import GUIDANCE_SCALES, PER_CLASS
from training.runs import Run

from . import jobs
from .catalog import LabeledRun, find_runs, no_runs_message
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


def runs_or_stop(settings: Settings) -> list[LabeledRun]:
    """The listed runs, each read once for this render (bad ones included, with their problem);
    with none, an st.info on how to train one and the page stops."""
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


def run_problems(runs: Sequence[LabeledRun]) -> None:
    """One warning line per run that cannot be read in full, with its reason."""
    for r in runs:
        if r.run.problem is not None:
            left_out = " is left out" if r.run.config is None else ""
            st.warning(f"Run `{r.label}`{left_out}: {r.run.problem}")


def run_select(runs: Sequence[LabeledRun], key: str, *, label: str = "Run") -> LabeledRun | None:
    """A selectbox over the runs whose config can be read and that have a checkpoint (all of
    those when none has one), newest first, each with its status (pages name the runs with a
    problem above it: run_problems); None, with an st.info, when no run can be offered."""
    readable = [r for r in runs if r.run.config is not None]
    usable = [r for r in readable if r.run.checkpoints] or readable
    if not usable:
        st.info("No run here can be read: see the reasons above.")
        return None
    by_label = {r.label: r for r in usable}
    choice = _picker(
        label,
        list(by_label),
        key,
        format_func=lambda lab: (
            f"{lab} · {by_label[lab].run.experiment} · {by_label[lab].run.status}"
        ),
    )
    return by_label[choice]


def checkpoint_select(run: LabeledRun, key: str) -> Checkpoint | None:
    """A selectbox over a run's readable checkpoints (latest first; run_problems names the
    others); st.info and None when it has none."""
    ckpts = list(run.run.checkpoints)[::-1]
    if not ckpts:
        st.info(f"Run `{run.label}` has no complete checkpoint yet (it saves one per epoch).")
        return None
    names = [c.path.name for c in ckpts]
    name = _picker("Checkpoint", names, f"{key}_{run.label}")
    return ckpts[names.index(name)]


def model_label(run: LabeledRun, ckpt: Checkpoint) -> str:
    """How a result names the model that made it: "run · checkpoint"."""
    return f"{run.label} · {ckpt.path.name}"


def evaluate_controls(run: Run, key: str) -> bool:
    """Evaluate button of a run (a background `python -m training evaluate`), or the running
    evaluation's log tail; True while one runs."""
    job = run.evaluation_job
    if job is not None and job.alive():
        st.info(f"Evaluating {run.name} (pid {job.pid}); the results appear on the Runs page.")
        st.code(jobs.tail(job.log, 8) or "(starting)", language=None, wrap_lines=True)
        return True
    with st.expander(f"Evaluate {run.name}"):
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
                    jobs.EvalRequest(run.path, int(per_class), int(steps) or None, int(repeats))
                )
                st.toast(f"Evaluating {run.name} (pid {job.pid}).")
                return True
    if job is not None and not run.evaluation.cells:
        st.warning(f"The last evaluation of {run.name} left no result; its log ends:")
        st.code(jobs.tail(job.log, 8), language=None, wrap_lines=True)
    return False
