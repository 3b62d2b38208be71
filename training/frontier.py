"""The quality-vs-compute frontier of evaluated runs: Fréchet distance and class accuracy against
model evaluations per image (NFE), from the results stored in their run records.

`frontier_lines` lays the stored cells out as lines (one per run, sampler and guidance scale;
checkpoint and sample count join the name where they differ) and the real-vs-real floors (one per
dataset and sample count); `frontier_figure` draws them with plotly (the dashboard),
`write_frontier_png` with matplotlib (`python -m training frontier RUN ... --out FILE.png`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .config import ConfigError
from .evaluation_record import EvaluationCell, RunEvaluation

COLORS = qualitative.Plotly  # a colour per run and sampler
DASHES = ("solid", "dash", "dot", "dashdot")  # a dash per guidance scale
MARKERS = ("circle", "square", "diamond", "triangle-up")  # a marker per run
MPL_STYLE = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-.", "circle": "o"}
MPL_STYLE |= {"square": "s", "diamond": "D", "triangle-up": "^"}
FRECHET_TITLE = "Fréchet distance (lower is better)"
ACCURACY_TITLE = "class accuracy (%)"
NFE_TITLE = "model evaluations per image (NFE)"


@dataclass(frozen=True)
class FrontierLine:
    """Cells of one run, sampler, guidance, checkpoint and sample count, by rising NFE."""

    label: str
    color: str
    dash: str
    marker: str
    cells: tuple[EvaluationCell, ...]
    ratios: tuple[float | None, ...]  # each cell's Fréchet distance over its floor


@dataclass(frozen=True)
class FloorLine:
    """A real-vs-real floor: the Fréchet distance a perfect model scores with that many samples."""

    label: str
    value: float


def frontier_lines(
    evaluations: Mapping[str, RunEvaluation],
    guidance: Sequence[float] | None = None,
    per_class: int | None = None,
) -> tuple[list[FrontierLine], list[FloorLine]]:
    """The lines and floors of runs' results (name -> read_evaluation), keeping only the guidance
    scales in `guidance` (an unconditional model's cells are always kept) and the sample count
    `per_class` when given."""
    groups: dict[tuple, list[EvaluationCell]] = {}
    for run, ev in evaluations.items():
        for c in ev.cells:
            if (guidance is None or c.guidance is None or c.guidance in guidance) and (
                per_class is None or c.per_class == per_class
            ):
                key = (run, c.sampler, c.guidance, c.checkpoint, c.per_class)
                groups.setdefault(key, []).append(c)
    varies = [len(evaluations) > 1] + [len({k[i] for k in groups}) > 1 for i in range(1, 5)]
    pairs = dict.fromkeys(k[:2] for k in groups)  # (run, sampler)
    colors = {pair: COLORS[i % len(COLORS)] for i, pair in enumerate(pairs)}
    markers = {run: MARKERS[i % len(MARKERS)] for i, run in enumerate(evaluations)}
    scales = list(dict.fromkeys(sorted(k[2] for k in groups if k[2] is not None)))
    lines, floors = [], {}
    for key, cells in groups.items():
        run, sampler, g, checkpoint, per_class = key
        parts = [run] * varies[0] + [sampler]
        parts.append("unguided" if g is None else f"guidance {g:g}")
        parts += [str(checkpoint)] * varies[3] + [f"{per_class} a class"] * varies[4]
        cells.sort(key=lambda c: c.nfe)
        ev = evaluations[run]
        dash = DASHES[scales.index(g) % len(DASHES)] if g is not None else "solid"
        lines.append(
            FrontierLine(
                " · ".join(parts),
                colors[run, sampler],
                dash,
                markers[run],
                tuple(cells),
                tuple(ev.ratio(c) for c in cells),
            )
        )
        for c in cells:
            if (floor := ev.floor(c)) is not None:
                label = f"real vs real, {floor.dataset}, {floor.per_class} a class"
                floors.setdefault((label, round(floor.mean, 2)), floor.mean)
    floor_lines = [FloorLine(f"{label}: {v:.1f}", v) for (label, _), v in floors.items()]
    return lines, sorted(floor_lines, key=lambda f: f.value)


def log_ticks(lo: float, hi: float) -> list[float]:
    """Readable ticks of a log axis spanning [lo, hi] (lo > 0): 1, 2, 5 x powers of ten."""
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
    ]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    return inside or [lo, hi]


def _check(lines: list[FrontierLine]) -> None:
    if not lines:
        raise ConfigError(
            "no evaluation results to plot: score the runs first with "
            "python -m training evaluate RUN --sampler ... --steps ..."
        )


def _frechet_ticks(lines: list[FrontierLine], floors: list[FloorLine]) -> list[float]:
    values = [c.frechet for line in lines for c in line.cells] + [f.value for f in floors]
    positive = [v for v in values if v > 0] or [1.0]
    return log_ticks(min(positive), max(positive))


def _nfe_ticks(lines: list[FrontierLine]) -> list[float]:
    nfes = [c.nfe for line in lines for c in line.cells]
    return log_ticks(min(nfes), max(nfes))


def frontier_figure(
    evaluations: Mapping[str, RunEvaluation],
    guidance: Sequence[float] | None = None,
    per_class: int | None = None,
) -> go.Figure:
    """Plotly figure: Fréchet distance (log axis, the floors as dashed grey lines labelled with
    their sample count) and class accuracy against NFE (log axis), ticks at 1, 2, 5, 10, ...; one
    line per run (its marker), sampler (with the run: its colour) and guidance scale (its dash);
    frontier_lines keeps `guidance` and `per_class`. ConfigError when there is nothing to plot."""
    lines, floors = frontier_lines(evaluations, guidance, per_class)
    _check(lines)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=(FRECHET_TITLE, ACCURACY_TITLE), horizontal_spacing=0.08
    )
    for line in lines:
        steps = [c.steps for c in line.cells]
        style = dict(name=line.label, legendgroup=line.label, mode="lines+markers")
        style |= dict(line=dict(color=line.color, dash=line.dash), marker=dict(symbol=line.marker))
        ratios = ["-" if r is None else f"{r:.2f}x the floor" for r in line.ratios]
        fig.add_scatter(
            x=[c.nfe for c in line.cells],
            y=[c.frechet for c in line.cells],
            customdata=list(zip(steps, ratios, strict=True)),
            hovertemplate="%{customdata[0]} steps, NFE %{x}: Fréchet %{y:.2f} (%{customdata[1]})",
            row=1,
            col=1,
            **style,
        )
        accuracy = [
            (c.nfe, 100 * c.accuracy, c.steps) for c in line.cells if c.accuracy is not None
        ]
        if accuracy:
            fig.add_scatter(
                x=[a[0] for a in accuracy],
                y=[a[1] for a in accuracy],
                customdata=[a[2] for a in accuracy],
                hovertemplate="%{customdata} steps, NFE %{x}: %{y:.1f}%",
                showlegend=False,
                row=1,
                col=2,
                **style,
            )
    for i, floor in enumerate(floors):  # labels alternate sides so that close floors stay legible
        fig.add_hline(y=floor.value, line=dict(color="gray", dash="dash"), row=1, col=1)
        fig.add_annotation(  # not add_hline's own: on a log axis it lands at 10 ** value
            text=floor.label,
            x=0,
            xref="x domain",
            xanchor="left",
            y=math.log10(floor.value),
            yanchor="top" if i % 2 else "bottom",
            showarrow=False,
            row=1,
            col=1,
        )
    nfes = _nfe_ticks(lines)
    fig.update_xaxes(type="log", tickvals=nfes, ticktext=[f"{n:g}" for n in nfes], title=NFE_TITLE)
    ticks = _frechet_ticks(lines, floors)
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], row=1, col=1)
    fig.update_yaxes(range=[0, 101], row=1, col=2)
    legend_rows = -(-len(lines) // 3)  # about three long labels a row at a page's width
    fig.update_layout(
        height=420 + 22 * legend_rows,
        hovermode="closest",
        margin=dict(l=10, r=10, t=40, b=70 + 22 * legend_rows),
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
    )
    return fig


def write_frontier_png(
    evaluations: Mapping[str, RunEvaluation],
    out: str | Path,
    guidance: Sequence[float] | None = None,
    per_class: int | None = None,
) -> int:
    """Draw what frontier_figure draws with matplotlib into the PNG `out` (atomically); returns
    the number of results plotted. ConfigError when there is nothing to plot."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    from .figures import save_figure

    lines, floors = frontier_lines(evaluations, guidance, per_class)
    _check(lines)
    columns = min(3, len(lines))  # three legend columns of long labels fit the 12-inch width
    fig = Figure(figsize=(12, 4.2 + 0.2 * -(-len(lines) // columns)), layout="constrained")
    ax_fd, ax_acc = fig.subplots(1, 2)
    for line in lines:
        style = dict(color=line.color, linestyle=MPL_STYLE[line.dash], markersize=4)
        style["marker"] = MPL_STYLE[line.marker]
        x, y = [c.nfe for c in line.cells], [c.frechet for c in line.cells]
        ax_fd.plot(x, y, label=line.label, **style)
        accuracy = [(c.nfe, 100 * c.accuracy) for c in line.cells if c.accuracy is not None]
        if accuracy:
            ax_acc.plot([a[0] for a in accuracy], [a[1] for a in accuracy], **style)
    for i, floor in enumerate(floors):
        ax_fd.axhline(floor.value, color="gray", linestyle="--", linewidth=1)
        ax_fd.annotate(
            floor.label,
            (0.01, floor.value),
            xycoords=("axes fraction", "data"),
            va="top" if i % 2 else "bottom",
            fontsize=8,
            color="dimgray",
        )
    nfes, ticks = _nfe_ticks(lines), _frechet_ticks(lines, floors)
    for ax, title in ((ax_fd, FRECHET_TITLE), (ax_acc, ACCURACY_TITLE)):
        ax.set_xscale("log")
        ax.set_xticks(nfes, [f"{n:g}" for n in nfes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(NFE_TITLE)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_fd.set_yscale("log")
    ax_fd.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax_fd.yaxis.set_minor_locator(NullLocator())
    ax_acc.set_ylim(0, 101)
    fig.legend(loc="outside lower center", ncols=columns, fontsize=8, frameon=False)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, Path(out))
    return sum(len(line.cells) for line in lines)
