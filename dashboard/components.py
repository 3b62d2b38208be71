"""Widgets shared by the pages: the user-error boundary and the run and checkpoint pickers."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import streamlit as st

from training.checkpoints import Checkpoint, list_checkpoints

from .catalog import Run, find_runs, no_runs_message
from .settings import Settings

# Errors a user can cause (bad upload, corrupt checkpoint, deleted run, missing access...): the
# lab raises these with a message meant for people. Anything else is a bug and propagates.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, NotImplementedError)


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


def run_select(runs: Sequence[Run], key: str, *, label: str = "Run") -> Run:
    """A selectbox over runs with checkpoints (all runs when none has one)."""
    usable = [r for r in runs if r.info.num_checkpoints] or list(runs)
    by_label = {r.label: r for r in usable}
    choice = st.selectbox(label, list(by_label), key=key, format_func=lambda lab: (
        f"{lab} · {by_label[lab].info.experiment} · {by_label[lab].info.status}"))
    return by_label[choice]


def checkpoint_select(run: Run, key: str) -> Checkpoint | None:
    """A selectbox over a run's checkpoints (latest first); st.info and None when it has none."""
    ckpts = list_checkpoints(run.path)[::-1]
    if not ckpts:
        st.info(f"Run `{run.label}` has no complete checkpoint yet (it saves one per epoch).")
        return None
    names = [c.path.name for c in ckpts]
    name = st.selectbox("Checkpoint", names, key=f"{key}_{run.label}")
    return ckpts[names.index(name)]
