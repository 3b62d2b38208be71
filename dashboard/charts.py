"""Plotly figures of run metrics (rows of metrics.jsonl), one trace per run."""
from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

Rows = list[dict[str, Any]]
COLORS = qualitative.Plotly


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing); weight 0 = raw."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i) if weight else v)
    return out


def _layout(fig: go.Figure, title: str, x: str, y: str, log_y: bool = False) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=340, hovermode="x unified",
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def metric_figure(runs: dict[str, Rows], key: str, *, x: str = "step", smoothing: float = 0.0,
                  log_y: bool = False, title: str | None = None) -> go.Figure:
    """`key` against `x` ("step" or "epoch") for each run; raw values faint under the smoothed."""
    fig = go.Figure()
    for i, (name, rows) in enumerate(runs.items()):
        rows = [r for r in rows if r.get(key) is not None and r.get(x) is not None]
        xs, ys = [r[x] for r in rows], [r[key] for r in rows]
        color = COLORS[i % len(COLORS)]
        if smoothing:
            fig.add_scatter(x=xs, y=ys, name=f"{name} (raw)", line=dict(color=color, width=1),
                            opacity=0.3, showlegend=False, hoverinfo="skip")
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
        fig.add_scatter(x=centres, y=bins, name=f"{name} (step {last.get('step')})",
                        mode="lines+markers", line=dict(color=COLORS[i % len(COLORS)]))
    return _layout(fig, "loss by t (last logged step)", "t (bin centre)", "loss", log_y)
