"""Widgets shared by the pages: the user-error boundary and the run and checkpoint pickers."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import streamlit as st

from training.checkpoints import Checkpoint
from training.config import (
    COURSE_TRAIN_SIZE,
    GUIDANCE_SCALES,
    PER_CLASS,
    SAMPLERS_BY_KIND,
    RunConfig,
)
from training.runs import Run

from . import jobs, settings
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
    by_name = {c.path.name: c for c in ckpts}
    name = _picker(
        "Checkpoint",
        list(by_name),
        f"{key}_{run.label}",
        format_func=lambda n: checkpoint_name(by_name[n]),
    )
    return by_name[name]


def model_label(run: LabeledRun, ckpt: Checkpoint) -> str:
    """How a result names the model that made it: "run · checkpoint"."""
    return f"{run.label} · {ckpt.path.name}"


def processes_refused() -> str | None:
    """Why this server may not start or stop processes (settings.exposure), else None."""
    return settings.current().exposure


def epoch_meaning(config: RunConfig) -> str:
    """What an epoch of this run is: "938 steps (the course's epoch: ...)"."""
    options, plan = config.options, config.plan
    if options.epoch_steps is not None:
        why = "set by --epoch-steps"
    elif options.epochs is not None or plan.train_size >= COURSE_TRAIN_SIZE:
        why = f"one pass over the {plan.train_size:,} training digits of {plan.dataset}"
    else:
        why = (
            f"the course's epoch, {COURSE_TRAIN_SIZE:,} digits in batches of "
            f"{options.batch_size}; {plan.dataset} has {plan.train_size:,}"
        )
    return f"{plan.epoch_steps:,} steps ({why})"


def epoch_and_step(run: Run, step: int | None = None) -> str:
    """ "epoch 2 (step 1,400 of 1,400)" at `step` (default: the run's recorded step)."""
    step = run.summary.step or 0 if step is None else step
    if run.config is None:
        return f"step {step:,}"
    plan = run.config.plan
    return f"epoch {plan.epoch_of(step)} (step {step:,} of {plan.total_steps:,})"


def checkpoint_name(ckpt: Checkpoint) -> str:
    """A checkpoint as the pickers name it: "epoch-0002 (step 1,400)"."""
    step = ckpt.meta.get("step")
    return ckpt.path.name if not isinstance(step, int) else f"{ckpt.path.name} (step {step:,})"


# the log's tqdm bar of `python -m training evaluate`: "LABEL:  40%|####  | 4/10 [00:12<...]"
_BAR = re.compile(r"(?:([^\r\n|]*?):)?\s*\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)")


def step_counts(text: str) -> tuple[int, ...]:
    """ "1 2 4, 8" -> (1, 2, 4, 8); ValueError naming the text when it holds anything else."""
    words = text.replace(",", " ").split()
    if not all(w.isdigit() and int(w) > 0 for w in words):
        raise ValueError(f"steps are whole numbers above 0 such as 1 2 4 8, got {text!r}")
    return tuple(dict.fromkeys(int(w) for w in words))


def evaluation_progress(log_text: str) -> tuple[int, int, str] | None:
    """(cells done, cells in all, the cell being scored) from an evaluation log's last command
    (the runner starts each with a "$ python ..." line); None before its bar appears."""
    last = log_text.rsplit("\n$ ", 1)[-1]
    bars = _BAR.findall(last)
    if not bars:
        return None
    label, done, total = bars[-1]
    return int(done), int(total), label.strip()


def _evaluation_notice(run: Run, job: jobs.Job, link: bool) -> None:
    """What the evaluation this session started (and that has ended) left: its best result,
    with a link to the Runs page, or its log's tail."""
    since = datetime.fromtimestamp(job.started, UTC).isoformat(timespec="seconds")
    new = [c for c in run.evaluation.cells if (c.evaluated or "") >= since]
    if not new:
        st.warning(f"The evaluation of {run.name} left no result; its log ends:")
        st.code(jobs.tail(job.log, 8), language=None, wrap_lines=True)
        return
    best = min(new, key=lambda c: c.frechet)
    ratio = run.evaluation.ratio(best)
    times = "" if ratio is None else f", {ratio:.2f}x the real-vs-real floor"
    guidance = "no guidance" if best.guidance is None else f"guidance {best.guidance:g}"
    st.success(
        f"Evaluation of {run.name} done: {len(new)} results. Best Fréchet distance "
        f"{best.frechet:.2f}{times}, with {best.sampler} at {best.steps} "
        f"step{'s' if best.steps != 1 else ''}, {guidance}.",
        icon=":material/check_circle:",
    )
    if link:
        st.page_link(
            "screens/runs.py",
            label="See every result on the Runs page",
            icon=":material/monitoring:",
        )


def evaluate_controls(run: Run, key: str, link: bool = True) -> bool:
    """Evaluate a run in the background (`python -m training evaluate`: the samplers x steps x
    guidance sweep): the form, the running evaluation's progress bar, or, once the evaluation
    this session started has ended, a done notice (with a link to the Runs page). True while
    one runs."""
    job = run.evaluation_job
    mine = st.session_state.setdefault("evaluations_started", {})  # run path -> job start
    if job is not None and job.alive():
        done = evaluation_progress(jobs.tail(job.log, 40))
        if done is None:
            st.progress(0.0, text=f"Evaluating {run.name}: loading the model and the classifier")
        else:
            cells, total, label = done
            st.progress(
                cells / max(total, 1), text=f"Evaluating {run.name}: {cells} of {total} · {label}"
            )
        return True
    if job is not None and mine.get(str(run.path)) == job.started:
        _evaluation_notice(run, job, link)
    refused = processes_refused()
    kind = run.config.options.kind if run.config is not None else None
    choices = SAMPLERS_BY_KIND.get(kind, ()) if kind is not None else ()
    with st.expander(f"Evaluate {run.name}"):
        c = st.columns([2, 2, 1, 1])
        picked = c[0].multiselect(
            "Samplers",
            choices,
            key=f"{key}_samplers",
            placeholder="the run's own",
            help="one line each on the quality-vs-compute plot",
        )
        steps_text = c[1].text_input(
            "Sampler steps",
            key=f"{key}_steps",
            placeholder="the run's own, or e.g. 1 2 4 8 16 32",
            help="step counts of each sampler: the points of each line",
        )
        per_class = c[2].number_input(
            "Samples per class", 1, 1000, PER_CLASS, key=f"{key}_per_class"
        )
        repeats = c[3].number_input(
            "Repeats",
            1,
            20,
            1,
            key=f"{key}_repeats",
            help="sample sets a guidance scale, scored by their mean: one "
            "set of 500 digits varies by about 15%, so compare runs "
            "with 4",
        )
        st.caption(
            f"Class accuracy and Fréchet distance at guidance "
            f"{', '.join(map(str, GUIDANCE_SCALES))} for every sampler and step count, against "
            "real digits (a classifier is trained once per dataset and cached)."
        )
        if st.button("Evaluate", key=f"{key}_start", disabled=refused is not None, help=refused):
            with user_errors("Cannot evaluate"):
                steps = step_counts(steps_text)
                job = jobs.start_evaluation(
                    jobs.EvalRequest(
                        run.path, int(per_class), steps, int(repeats), samplers=tuple(picked)
                    )
                )
                mine[str(run.path)] = job.started
                st.toast(f"Evaluating {run.name} (pid {job.pid}).")
                st.rerun()  # the page follows it from now on
    return False
