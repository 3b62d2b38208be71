"""Plotly figures of run metrics (rows of metrics.jsonl), one trace per run."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from training.curves import smooth
from training.evaluation_record import RunEvaluation

Rows = list[dict[str, Any]]
COLORS = qualitative.Plotly


def _layout(fig: go.Figure, title: str, x: str, y: str, log_y: bool = False) -> go.Figure:
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
        fig.update_yaxes(type="log")
    return fig


def metric_figure(
    runs: dict[str, Rows],
    key: str,
    *,
    x: str = "step",
    smoothing: float = 0.0,
    log_y: bool = False,
    title: str | None = None,
) -> go.Figure:
    """`key` against `x` ("step" or "epoch") for each run; raw values faint under the smoothed."""
    fig = go.Figure()
    for i, (name, rows) in enumerate(runs.items()):
        rows = [r for r in rows if r.get(key) is not None and r.get(x) is not None]
        xs, ys = [r[x] for r in rows], [r[key] for r in rows]
        color = COLORS[i % len(COLORS)]
        if smoothing:
            fig.add_scatter(
                x=xs,
                y=ys,
                name=f"{name} (raw)",
                line=dict(color=color, width=1),
                opacity=0.3,
                showlegend=False,
                hoverinfo="skip",
            )
        fig.add_scatter(x=xs, y=smooth(ys, smoothing), name=name, line=dict(color=color))
    return _layout(fig, title or key, x, key, log_y)


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
    return _layout(fig, "loss by t (last logged step)", "t (bin centre)", "loss", log_y)


def evaluation_figure(evals: dict[str, RunEvaluation]) -> go.Figure:
    """Class accuracy and Fréchet distance against guidance scale, a trace per run (its latest
    evaluation setting, RunEvaluation.latest); each real-vs-real floor a dashed line, an
    unguided model's Fréchet distance a dotted one."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("class accuracy (%)", "Fréchet distance"),
        horizontal_spacing=0.1,
    )
    floors: dict[float, list[str]] = {}
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
            floors.setdefault(round(floor.mean, 2), []).append(floor.dataset)
    for floor, datasets in floors.items():
        fig.add_hline(
            y=floor,
            line=dict(color="gray", dash="dash"),
            row=1,
            col=2,
            annotation_text=f"real vs real ({', '.join(sorted(set(datasets)))}): {floor:g}",
            annotation_position="top left",
        )
    fig.update_xaxes(title_text="guidance scale")
    fig.update_layout(
        height=340,
        hovermode="x unified",
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", y=-0.3),
    )
    return fig
