"""Runs: compare local (and W&B) runs: curves, config diff, sample grids, evaluation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import charts, jobs, settings, wandb_source
from dashboard.catalog import Run
from dashboard.components import KEEP, evaluate_controls, runs_or_stop, user_errors
from training.curves import SMOOTHING
from training.evaluation_record import RunEvaluation, read_evaluation
from training.runs import list_sample_grids, read_metrics, read_summary

REFRESH_S = 5
EVAL_REFRESH_S = 5
MAX_DEFAULT_SELECTED = 3


def filtered(runs: list[Run]) -> list[Run]:
    """Filter widgets for experiment, dataset and tag; returns the runs that pass."""
    cols = st.columns(3)
    picks = [
        cols[0].multiselect(
            "Experiment", sorted({r.info.experiment for r in runs}), key="runs_experiments", **KEEP
        ),
        cols[1].multiselect(
            "Dataset", sorted({r.info.dataset for r in runs}), key="runs_datasets", **KEEP
        ),
        cols[2].multiselect(
            "Tag", sorted({t for r in runs for t in r.tags}), key="runs_tags", **KEEP
        ),
    ]
    return [
        r
        for r in runs
        if (not picks[0] or r.info.experiment in picks[0])
        and (not picks[1] or r.info.dataset in picks[1])
        and (not picks[2] or set(picks[2]) <= set(r.tags))
    ]


def runs_table(runs: list[Run]) -> None:
    rows = []
    for r in runs:
        s = read_summary(r.path) if r.path.is_dir() else {}
        total = r.info.total_steps
        rows.append(
            {
                "run": r.label,
                "experiment": r.info.experiment,
                "dataset": r.info.dataset,
                "status": jobs.run_status(r.path) if r.path.is_dir() else "deleted",
                "epoch": s.get("epoch"),
                "step": f"{s.get('step', 0)} / {total or '?'}",
                "final loss": s.get("final_loss"),
                "wall time (s)": s.get("wall_time_s"),
                "checkpoints": r.info.num_checkpoints,
                "tags": ", ".join(r.tags),
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def curves(runs: list[Run]) -> None:
    """Loss, learning rate and loss by t-bin of the selected runs (re-read on every refresh)."""
    metrics = {r.label: read_metrics(r.path) for r in runs}
    c = st.columns([1, 2, 1])
    x = c[0].radio("x axis", ["step", "epoch"], horizontal=True, key="curves_x", **KEEP)
    smoothing = c[1].slider("Smoothing", 0.0, 0.99, SMOOTHING, 0.01, key="curves_smoothing", **KEEP)
    log_y = c[2].checkbox("Log scale", True, key="curves_log", **KEEP)
    if not any(metrics.values()):
        st.info("No metrics logged yet: a run writes metrics.jsonl every `--log-every` steps.")
        return
    st.plotly_chart(
        charts.metric_figure(
            metrics, "loss", x=x, smoothing=smoothing, log_y=log_y, title="training loss"
        ),
        width="stretch",
    )
    st.plotly_chart(
        charts.metric_figure(metrics, "lr", x=x, log_y=log_y, title="learning rate"),
        width="stretch",
    )
    st.plotly_chart(charts.t_bin_figure(metrics, log_y=log_y), width="stretch")


def live_section(runs: list[Run]) -> None:
    """Status table and curves, refreshed every REFRESH_S seconds while the toggle is on."""
    running = any(jobs.run_status(r.path) in jobs.BUSY for r in runs if r.path.is_dir())
    live = st.toggle(
        f"Live refresh (every {REFRESH_S} s)",
        value=running,
        key="runs_live",
        help="On by default while a selected run is training.",
    )

    @st.fragment(run_every=REFRESH_S if live else None)
    def view() -> None:
        runs_table(runs)
        curves(runs)

    view()


def config_diff(runs: list[Run]) -> None:
    keys = sorted({k for r in runs for k in r.config})
    values = {k: [repr(r.config.get(k, "—")) for r in runs] for k in keys}
    differ = {k: v for k, v in values.items() if len(set(v)) > 1}
    if len(runs) < 2:
        st.caption("Select two or more runs to see what differs.")
    elif not differ:
        st.caption("The selected runs have identical configs.")
    else:
        st.dataframe(pd.DataFrame(differ, index=[r.label for r in runs]).T, width="stretch")
    with st.expander("Full configs"):
        st.dataframe(pd.DataFrame(values, index=[r.label for r in runs]).T, width="stretch")


def sample_grids(runs: list[Run]) -> None:
    """Per-epoch sample grids side by side, one column per run, with an epoch slider."""
    grids = {r.label: list_sample_grids(r.path) for r in runs}
    epochs = sorted({e for g in grids.values() for e in g})
    if not epochs:
        st.caption("No per-epoch sample grids yet (samples/epoch-NNNN.png).")
        return
    epoch = (
        st.select_slider("Epoch", epochs, value=epochs[-1], key="grid_epoch")
        if len(epochs) > 1
        else epochs[0]
    )
    for col, (label, grid) in zip(st.columns(len(grids)), grids.items(), strict=False):
        path: Path | None = grid.get(epoch)
        with col, user_errors(f"Grid of {label}"):
            if path is None:
                st.caption(f"{label}: no grid at epoch {epoch}")
            else:
                st.image(path.read_bytes(), caption=f"{label} · epoch {epoch}", width="stretch")


def evaluations(runs: list[Run]) -> dict[str, RunEvaluation]:
    """The stored evaluation results of each run that has some (`python -m training evaluate`;
    training.evaluation_record)."""
    out = {}
    for r in runs:
        ev = read_evaluation(r.path) if r.path.is_dir() else None
        if ev is not None and ev.cells:
            out[r.label] = ev
    return out


def evaluation_table(runs: list[Run]) -> None:
    """Class accuracy and Fréchet distance against guidance (the real-vs-real floor a line),
    beside one row per run: its best Fréchet distance and the accuracy at that guidance, from
    the run's latest evaluation setting (RunEvaluation.latest)."""
    evals = evaluations(runs)
    if not evals:
        st.caption(
            "No evaluation yet: evaluate a run below (or `python -m training evaluate RUN_DIR`)."
        )
        return
    rows = []
    for label, ev in evals.items():
        best = min(ev.latest(), key=lambda c: c.frechet)
        floor, ratio = ev.floor(best), ev.ratio(best)
        rows.append(
            {
                "run": label,
                "best Fréchet": round(best.frechet, 2),
                "at guidance": "none" if best.guidance is None else f"{best.guidance:g}",
                "x floor": None if ratio is None else round(ratio, 2),
                "class accuracy": None if best.accuracy is None else f"{100 * best.accuracy:.1f}%",
                "Fréchet floor (real vs real)": None if floor is None else floor.mean,
                "samples": best.per_class * 10 * best.repeats,
                "checkpoint": best.checkpoint,
            }
        )
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.evaluation_figure(evals), width="stretch", key="evaluation_chart")
    right.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def evaluate_section(runs: list[Run]) -> None:
    """The plot and table, and an Evaluate button; refreshed while an evaluation runs."""
    done = [
        r
        for r in runs
        if r.path.is_dir()
        and r.info.num_checkpoints
        and jobs.run_status(r.path) in ("finished", "stopped")
    ]

    def evaluating() -> bool:
        return any(jobs.live_job(r.path, "evaluate") for r in runs if r.path.is_dir())

    polling = evaluating()

    @st.fragment(run_every=EVAL_REFRESH_S if polling else None)
    def view() -> None:
        evaluation_table(runs)
        if not done:
            return
        by_label = {r.label: r for r in done}
        label = st.selectbox("Evaluate run", list(by_label), key="runs_eval_run")
        evaluate_controls(by_label[label].path, key="runs_eval")
        if evaluating() != polling:
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
    st.title("Runs")
    s = settings.current()
    wandb_panel(s)
    runs = filtered(runs_or_stop(s))
    if not runs:
        st.info("No run matches the filters.")
        return
    chosen = compare_picker([r.label for r in runs])
    selected = [r for r in runs if r.label in chosen]
    if not selected:
        st.info("Select one or more runs to compare.")
        return
    live_section(selected)
    st.subheader("Samples by epoch")
    sample_grids(selected)
    st.subheader("Evaluation")
    evaluate_section(selected)
    st.subheader("Config diff")
    config_diff(selected)


page()
