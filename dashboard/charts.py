"""Plotly figures of run metrics (rows of metrics.jsonl), one trace per run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from training.curves import SMOOTHING, smooth
from training.evaluation_record import RunEvaluation
from training.frontier import log_ticks

Rows = list[dict[str, Any]]
COLORS = qualitative.Plotly


def _layout(
    fig: go.Figure, title: str, x: str, y: str, log_y: bool = False, values: Sequence[float] = ()
) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        height=340,
        hovermode="x unified",
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", y=-0.25),
    )
    if log_y:
        log_axis(fig, values)
    return fig


def log_axis(fig: go.Figure, values: Sequence[float], **where: int) -> None:
    """A log y axis ticked at 1, 2, 5 x powers of ten over the positive `values`, each tick
    labelled in full (plotly's own labels minor ticks with a bare digit)."""
    positive = [v for v in values if v is not None and v > 0]
    if not positive:
        fig.update_yaxes(type="log", **where)
        return
    ticks = log_ticks(min(positive), max(positive))
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], **where)


def smoothing_for(points: int) -> float:
    """The loss curves' smoothing weight: SMOOTHING, less on few points, where an average over
    the last few would lag the logged value (none under 10 points)."""
    return max(0.0, min(SMOOTHING, 1 - 10 / max(points, 1)))


def metric_figure(
    runs: dict[str, Rows],
    key: str,
    *,
    x: Literal["step", "epoch"] = "step",
    epoch_steps: dict[str, int] | None = None,
    smoothing: float = 0.0,
    log_y: bool = False,
    title: str | None = None,
) -> go.Figure:
    """`key` against the step for each run, or against epochs (x="epoch": step / the run's
    `epoch_steps`, so epoch k spans k - 1 to k and is labelled in its middle, as the runs
    table counts it); raw values faint under the smoothed."""
    fig = go.Figure()
    values: list[float] = []
    last_epoch = 0
    for i, (name, rows) in enumerate(runs.items()):
        rows = [r for r in rows if r.get(key) is not None and r.get("step") is not None]
        steps, ys = [r["step"] for r in rows], [r[key] for r in rows]
        per = (epoch_steps or {}).get(name)
        xs = [s / per for s in steps] if x == "epoch" and per else steps
        if x == "epoch" and per and steps:
            last_epoch = max(last_epoch, math.ceil(steps[-1] / per))
        color = COLORS[i % len(COLORS)]
        hover = "step %{customdata:,}: %{y:.4g}"
        if smoothing:
            fig.add_scatter(
                x=xs,
                y=ys,
                name=f"{name} (logged)",
                line=dict(color=color, width=1),
                opacity=0.3,
                customdata=steps,
                hovertemplate=hover,
                showlegend=False,
            )
        fig.add_scatter(
            x=xs,
            y=smooth(ys, smoothing),
            name=name if not smoothing else f"{name} (smoothed)",
            line=dict(color=color),
            customdata=steps,
            hovertemplate=hover,
        )
        values += ys
    fig = _layout(fig, title or key, x, key, log_y, values)
    if last_epoch:
        middles = [k - 0.5 for k in range(1, last_epoch + 1)]
        fig.update_xaxes(
            tickvals=middles,
            ticktext=[f"epoch {k}" for k in range(1, last_epoch + 1)],
            showgrid=False,
            minor=dict(tickvals=list(range(last_epoch + 1)), showgrid=True),
            title=None,
        )
    return fig


def t_bin_figure(runs: dict[str, Rows], *, log_y: bool = False) -> go.Figure:
    """Loss by noise-level bin (`loss_t_bin`, 10 bins over t in [0, 1]) at each run's last log."""
    fig = go.Figure()
    for i, (name, rows) in enumerate(runs.items()):
        last = next((r for r in reversed(rows) if r.get("loss_t_bin")), None)
        if last is None:
            continue
        bins = last["loss_t_bin"]
        centres = [(k + 0.5) / len(bins) for k in range(len(bins))]
        fig.add_scatter(
            x=centres,
            y=bins,
            name=f"{name} (step {last.get('step')})",
            mode="lines+markers",
            line=dict(color=COLORS[i % len(COLORS)]),
        )
    values = [v for trace in fig.data for v in trace.y]
    return _layout(fig, "loss by t (last logged step)", "t (bin centre)", "loss", log_y, values)


def evaluation_figure(evals: dict[str, RunEvaluation]) -> go.Figure:
    """Class accuracy and Fréchet distance against guidance scale, a trace per run (its latest
    evaluation setting, RunEvaluation.latest); the real-vs-real floor of each dataset and
    sample count a dashed line labelled with them, an unguided model's Fréchet distance a dotted
    one."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("class accuracy (%)", "Fréchet distance"),
        horizontal_spacing=0.1,
    )
    floors: dict[tuple[str, int], float] = {}  # (dataset, samples a class) -> floor
    for i, (name, ev) in enumerate(evals.items()):
        color = COLORS[i % len(COLORS)]
        cells = ev.latest()
        guided = [c for c in cells if c.guidance is not None]
        acc = [(c.guidance, 100 * c.accuracy) for c in guided if c.accuracy is not None]
        if acc:
            fig.add_scatter(
                x=[g for g, _ in acc],
                y=[a for _, a in acc],
                name=name,
                legendgroup=name,
                mode="lines+markers",
                line=dict(color=color),
                row=1,
                col=1,
            )
        if guided:
            fig.add_scatter(
                x=[c.guidance for c in guided],
                y=[c.frechet for c in guided],
                name=name,
                legendgroup=name,
                showlegend=not acc,
                mode="lines+markers",
                line=dict(color=color),
                row=1,
                col=2,
            )
        for c in cells:
            if c.guidance is None:
                fig.add_hline(
                    y=c.frechet,
                    line=dict(color=color, dash="dot"),
                    row=1,
                    col=2,
                    annotation_text=f"{name} (no guidance)",
                )
        if cells and (floor := ev.floor(cells[0])) is not None:
            floors[floor.key] = floor.mean
    for i, ((dataset, per_class), floor) in enumerate(sorted(floors.items(), key=lambda f: f[1])):
        fig.add_hline(  # labels alternate sides so that close floors stay legible
            y=floor,
            line=dict(color="gray", dash="dash"),
            row=1,
            col=2,
            annotation_text=f"real vs real, {dataset}, {per_class} a class: {floor:.1f}",
            annotation_position="bottom left" if i % 2 else "top left",
        )
    fig.update_xaxes(title_text="guidance scale")
    fig.update_layout(
        height=340,
        hovermode="x unified",
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", y=-0.3),
    )
    return fig
