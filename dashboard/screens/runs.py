"""Runs: compare local (and W&B) runs: curves, config diff, sample grids, evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, jobs, settings, wandb_source
from dashboard.catalog import LabeledRun
from dashboard.components import (
    KEEP,
    epoch_and_step,
    epoch_meaning,
    evaluate_controls,
    run_problems,
    runs_or_stop,
    user_errors,
)
from training.config import RunConfig
from training.curves import SMOOTHING
from training.evaluation_record import EvaluationCell, RunEvaluation
from training.frontier import frontier_figure
from training.runs import read_run

REFRESH_S = 5
EVAL_REFRESH_S = 5
MAX_DEFAULT_SELECTED = 3


def filtered(runs: list[LabeledRun]) -> list[LabeledRun]:
    """Filter widgets for experiment, dataset and tag; returns the runs that pass."""

    def dataset(r: LabeledRun) -> str:
        return r.run.config.plan.dataset if r.run.config is not None else "?"

    cols = st.columns(3)
    picks = [
        cols[0].multiselect(
            "Experiment", sorted({r.run.experiment for r in runs}), key="runs_experiments", **KEEP
        ),
        cols[1].multiselect(
            "Dataset", sorted(set(map(dataset, runs))), key="runs_datasets", **KEEP
        ),
        cols[2].multiselect(
            "Tag", sorted({t for r in runs for t in r.tags}), key="runs_tags", **KEEP
        ),
    ]
    return [
        r
        for r in runs
        if (not picks[0] or r.run.experiment in picks[0])
        and (not picks[1] or dataset(r) in picks[1])
        and (not picks[2] or set(picks[2]) <= set(r.tags))
    ]


def runs_table(runs: list[LabeledRun]) -> None:
    """One row per run, a run that cannot be read in full with its problem; the epoch with its
    step, and under the table what an epoch of each kind of run is."""
    rows = []
    for r in runs:
        s, cfg = r.run.summary, r.run.config
        rows.append(
            {
                "run": r.label,
                "experiment": r.run.experiment,
                "dataset": cfg.plan.dataset if cfg is not None else "?",
                "status": r.run.status,
                "progress": epoch_and_step(r.run),
                "final loss": s.final_loss,
                "wall time (s)": s.wall_time_s,
                "checkpoints": len(r.run.checkpoints),
                "tags": ", ".join(r.tags),
                "problem": r.run.problem or "",
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "final loss": st.column_config.NumberColumn(format="%.4f"),
            "wall time (s)": st.column_config.NumberColumn(format="%.0f"),
        },
    )
    meanings = {}
    for r in runs:
        if r.run.config is not None:
            meanings.setdefault(epoch_meaning(r.run.config), []).append(r.label)
    st.caption(
        "An epoch is "
        + "; ".join(f"{m} for {', '.join(labels)}" for m, labels in meanings.items())
        + ". Epochs count from 1; each ends with a sample grid and a checkpoint "
        "(`epoch-NNNN`)."
    )


def curves(runs: list[LabeledRun]) -> None:
    """Loss, learning rate and loss by t-bin of the selected runs."""
    logs = {r.label: r.run.metrics() for r in runs}
    for label, log in logs.items():
        if log.problem:
            st.caption(f"{label}: {log.problem}")
    metrics = {label: log.rows for label, log in logs.items()}
    epoch_steps = {r.label: r.run.config.plan.epoch_steps for r in runs if r.run.config}
    c = st.columns([1, 2, 1])
    x = c[0].radio("x axis", ["step", "epoch"], horizontal=True, key="curves_x", **KEEP)
    smoothing = c[1].slider("Smoothing", 0.0, 0.99, SMOOTHING, 0.01, key="curves_smoothing", **KEEP)
    log_y = c[2].checkbox("Log scale", True, key="curves_log", **KEEP)
    if not any(metrics.values()):
        st.info("No metrics logged yet: a run writes metrics.jsonl every `--log-every` steps.")
        return
    st.plotly_chart(
        charts.metric_figure(
            metrics,
            "loss",
            x=x,
            epoch_steps=epoch_steps,
            smoothing=smoothing,
            log_y=log_y,
            title="training loss",
        ),
        width="stretch",
    )
    st.plotly_chart(
        charts.metric_figure(
            metrics, "lr", x=x, epoch_steps=epoch_steps, log_y=log_y, title="learning rate"
        ),
        width="stretch",
    )
    st.plotly_chart(charts.t_bin_figure(metrics, log_y=log_y), width="stretch")


def refreshed(runs: list[LabeledRun]) -> Callable[[], list[LabeledRun]]:
    """For a fragment: `runs` as this page render read them on its first call, read again on
    each of its refreshes (so every render reads each run once)."""
    given = [runs]
    return lambda: given.pop() if given else [replace(r, run=read_run(r.path)) for r in runs]


def live_section(runs: list[LabeledRun]) -> None:
    """Status table and curves, refreshed every REFRESH_S seconds while the toggle is on."""
    running = any(r.run.status in jobs.BUSY for r in runs)
    live = st.toggle(
        f"Live refresh (every {REFRESH_S} s)",
        value=running,
        key="runs_live",
        help="On by default while a selected run is training.",
    )
    current = refreshed(runs)

    @st.fragment(run_every=REFRESH_S if live else None)
    def view() -> None:
        fresh = current()
        runs_table(fresh)
        curves(fresh)

    view()


def config_fields(config: RunConfig) -> dict[str, Any]:
    """A run's options and, as `plan.NAME`, its plan: one row each in the diff."""
    plan = {f"plan.{k}": v for k, v in asdict(config.plan).items()}
    return {**config.options.to_json(), **plan, "plan.epochs": config.plan.epochs}


def as_written(value: Any) -> str:
    """A config value as a user writes it on the command line: flow-class, none, true, 1e-3."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return " ".join(map(as_written, value))
    return str(value)


def config_diff(runs: list[LabeledRun]) -> None:
    configs = {r.label: config_fields(r.run.config) for r in runs if r.run.config is not None}
    keys = sorted({k for c in configs.values() for k in c})
    values = {k: [as_written(c[k]) if k in c else "—" for c in configs.values()] for k in keys}
    differ = {k: v for k, v in values.items() if len(set(v)) > 1}
    if len(configs) < 2:
        st.caption("Select two or more runs to see what differs.")
    elif not differ:
        st.caption("The selected runs have identical configs.")
    else:
        st.dataframe(pd.DataFrame(differ, index=list(configs)).T, width="stretch")
    st.caption(
        "`epochs` is what the run was asked for (none: the recipe's `steps` set its length); "
        "`plan.epochs` is how many epochs it spans."
    )
    with st.expander("Full configs"):
        st.dataframe(pd.DataFrame(values, index=list(configs)).T, width="stretch")


LATEST = "latest"


def sample_grids(runs: list[LabeledRun]) -> None:
    """Sample grids side by side, one column per run: each run's latest by default, or the
    grids of an epoch every compared run has one of."""
    grids = {r.label: r for r in runs}
    shared = sorted(set.intersection(*(set(r.run.sample_grids) for r in runs)))
    if not any(r.run.sample_grids for r in runs):
        st.caption("No sample grids yet: a run writes one at the end of every epoch.")
        return
    choices = [LATEST, *shared]
    if st.session_state.get("grid_epoch") not in choices:
        st.session_state["grid_epoch"] = LATEST  # an epoch the compared runs no longer share
    at = (
        st.segmented_control(
            "Epoch",
            choices,
            key="grid_epoch",
            format_func=lambda e: "latest of each run" if e == LATEST else f"epoch {e}",
            help="the epochs every compared run has a grid of",
        )
        or LATEST
    )
    for col, (label, r) in zip(st.columns(len(grids)), grids.items(), strict=True):
        run = r.run
        epoch = max(run.sample_grids, default=None) if at == LATEST else at
        with col, user_errors(f"Grid of {label}"):
            if epoch is None:
                st.caption(f"{label}: no grid yet")
                continue
            step = (
                min(epoch * run.config.plan.epoch_steps, run.config.plan.total_steps)
                if run.config is not None
                else None
            )
            st.image(
                run.image(run.sample_grids[epoch]),
                caption=f"{label} · {epoch_and_step(run, step) if step else f'epoch {epoch}'}",
                width="stretch",
            )


def result_row(label: str, ev: RunEvaluation, cell: EvaluationCell) -> dict[str, Any]:
    """One scored cell as a table row: what was sampled (the columns that explain the scores
    first), then the scores."""
    floor, ratio = ev.floor(cell), ev.ratio(cell)
    return {
        "run": label,
        "checkpoint": cell.checkpoint,
        "samples": cell.per_class * 10 * cell.repeats,
        "sampler": cell.sampler,
        "steps": cell.steps,
        "NFE": cell.nfe,
        "guidance": "none" if cell.guidance is None else f"{cell.guidance:g}",
        "Fréchet": round(cell.frechet, 2),
        "x floor": None if ratio is None else round(ratio, 2),
        "floor": None if floor is None else round(floor.mean, 2),
        "class accuracy": None if cell.accuracy is None else f"{100 * cell.accuracy:.1f}%",
    }


def evaluation_table(runs: list[LabeledRun]) -> None:
    """Class accuracy and Fréchet distance against guidance (each real-vs-real floor a line)
    and a row per run (its best Fréchet distance in its latest evaluation setting); then
    quality against model evaluations per image (NFE) for every sampler and step count scored
    (training.frontier), and every result in a table."""
    evals = {r.label: r.run.evaluation for r in runs if r.run.evaluation.cells}
    if not evals:
        st.caption(
            "No evaluation yet: evaluate a run below (or `python -m training evaluate RUN_DIR`)."
        )
        return
    best = [
        result_row(label, ev, min(ev.latest(), key=lambda c: c.frechet))
        for label, ev in evals.items()
    ]
    st.plotly_chart(charts.evaluation_figure(evals), width="stretch", key="evaluation_chart")
    st.caption("Each run's best Fréchet distance in its latest evaluation (lower is better):")
    st.dataframe(pd.DataFrame(best), hide_index=True, width="stretch")
    st.markdown("**Quality against compute**: every sampler and step count scored")
    st.plotly_chart(frontier_figure(evals), width="stretch", key="frontier_chart")
    with st.expander(f"All {sum(len(ev.cells) for ev in evals.values())} results"):
        every = [result_row(label, ev, c) for label, ev in evals.items() for c in ev.cells]
        st.dataframe(pd.DataFrame(every), hide_index=True, width="stretch")


def evaluate_section(runs: list[LabeledRun]) -> None:
    """The plot and table, and an Evaluate button; refreshed while an evaluation runs."""

    def evaluating(runs: list[LabeledRun]) -> bool:
        return any(r.run.evaluation_job and r.run.evaluation_job.alive() for r in runs)

    polling = evaluating(runs)
    current = refreshed(runs)

    @st.fragment(run_every=EVAL_REFRESH_S if polling else None)
    def view() -> None:
        fresh = current()
        evaluation_table(fresh)
        done = [r for r in fresh if r.run.checkpoints and r.run.status in ("finished", "stopped")]
        if done:
            by_label = {r.label: r for r in done}
            label = st.selectbox("Evaluate run", list(by_label), key="runs_eval_run")
            evaluate_controls(by_label[label].run, key="runs_eval", link=False)
        if evaluating(fresh) != polling:
            st.rerun()  # an evaluation started or ended: refresh (and start or stop polling)

    view()


def wandb_panel(s: settings.Settings) -> None:
    """W&B runs of the configured project and the checkpoint pull (network; see wandb_source)."""
    with st.expander("Weights & Biases", expanded=False):
        reason = wandb_source.unavailable_reason(s.wandb_project)
        if reason:
            st.caption(reason)
            st.button("Pull checkpoint into the runs folder", key="wandb_pull", disabled=True)
            return
        if not st.toggle(
            f"List the runs of {s.wandb_project}",
            key="wandb_on",
            help="Contacts W&B (network); off by default so the page never waits.",
        ):
            return
        with user_errors("W&B"):
            wb_runs = wandb_source.list_wandb_runs(s.wandb_project)
            if not wb_runs:
                st.caption(f"No runs in W&B project {s.wandb_project}.")
                return
            st.dataframe(pd.DataFrame(wb_runs), hide_index=True, width="stretch")
            by_id = {r["id"]: r for r in wb_runs}
            run_id = st.selectbox(
                "W&B run",
                list(by_id),
                key="wandb_run",
                format_func=lambda i: f"{by_id[i]['name']} ({i})",
            )
            if st.button(f"Pull checkpoint into {s.write_root}", key="wandb_pull"):
                with st.spinner("Downloading the checkpoint artifact..."):
                    path = wandb_source.pull_checkpoint(s.wandb_project, run_id, s.write_root)
                st.success(f"Pulled {path}")


def compare_picker(labels: list[str]) -> list[str]:
    """The "Compare runs" multiselect over `labels` (the runs the filters pass). When the filters
    change the choice keeps the runs that still pass, else takes the newest few; it outlasts a
    visit to another page."""
    state = st.session_state
    if "runs_selected" not in state or state.get("runs_options") != labels:
        kept = [label for label in state.get("runs_selected", []) if label in labels]
        state["runs_selected"] = kept or labels[:MAX_DEFAULT_SELECTED]
    state["runs_options"] = labels
    return st.multiselect("Compare runs", labels, key="runs_selected", **KEEP)


def page() -> None:
    s = settings.current()
    wandb_panel(s)
    listed = runs_or_stop(s)
    run_problems(listed)
    runs = filtered(listed)
    if not runs:
        st.info("No run matches the filters.")
        return
    chosen = compare_picker([r.label for r in runs])
    selected = [r for r in runs if r.label in chosen]
    if not selected:
        st.info("Select one or more runs to compare.")
        return
    live_section(selected)
    st.subheader("Sample grids")
    sample_grids(selected)
    st.subheader("Evaluation")
    evaluate_section(selected)
    st.subheader("Config diff")
    config_diff(selected)


page()
