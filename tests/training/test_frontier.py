"""The frontier plot: plotly figure and PNG of stored results against NFE, and its command."""

from dataclasses import replace

import pytest
from PIL import Image
from test_evaluation import TINY

from training import cli
from training.config import ConfigError
from training.evaluation import evaluate_run
from training.evaluation_record import EvaluationCell, FrechetFloor, RunEvaluation
from training.frontier import frontier_figure, frontier_lines, log_ticks, write_frontier_png


def _cell(sampler, steps, guidance, frechet, accuracy=0.9, per_class=20):
    evals = {"euler": 1, "heun": 2, "ddpm": 1}[sampler] * (1 + (guidance != 1))
    return EvaluationCell(
        "epoch-0002", sampler, steps, steps * evals, guidance, per_class, 1, 0, "bf16",
        "mnist-5k", accuracy, frechet, None, 1.0,
    )  # fmt: skip


FLOW = RunEvaluation(
    tuple(
        _cell(s, n, g, fd)
        for s in ("euler", "heun")
        for n, fd in ((1, 300.0), (4, 80.0), (16, 25.0))
        for g in (1.0, 5.0)
    ),
    (FrechetFloor("mnist-5k", 20, 50, 30.7, 3.0, 0, 0.976),),
)
DDPM = RunEvaluation(
    (_cell("ddpm", 50, 1.0, 40.0, per_class=50), _cell("ddpm", 100, 1.0, 33.0, per_class=50)),
    (FrechetFloor("mnist-5k", 50, 50, 12.1, 1.9, 0, 0.976),),
)


def test_lines_one_per_run_sampler_and_guidance_with_floors_by_sample_count():
    lines, floors = frontier_lines({"flow": FLOW, "ddpm": DDPM})
    assert [line.label for line in lines] == [
        "flow · euler · guidance 1 · 20 a class",
        "flow · euler · guidance 5 · 20 a class",
        "flow · heun · guidance 1 · 20 a class",
        "flow · heun · guidance 5 · 20 a class",
        "ddpm · ddpm · guidance 1 · 50 a class",
    ]
    assert [c.nfe for c in lines[3].cells] == [4, 16, 64] and lines[3].dash != lines[2].dash
    assert lines[0].color == lines[1].color != lines[2].color != lines[4].color
    assert lines[0].marker == lines[3].marker != lines[4].marker
    assert lines[0].ratios[0] == pytest.approx(300.0 / 30.7)
    assert [(f.label, f.value) for f in floors] == [
        ("real vs real, mnist-5k, 50 a class: 12.1", 12.1),
        ("real vs real, mnist-5k, 20 a class: 30.7", 30.7),
    ]
    only5, _ = frontier_lines({"flow": FLOW}, guidance=[5])
    assert [line.label for line in only5] == ["euler · guidance 5", "heun · guidance 5"]
    only50, floors = frontier_lines({"flow": FLOW, "ddpm": DDPM}, per_class=50)
    assert [line.label for line in only50] == ["ddpm · ddpm · guidance 1"]
    assert [f.value for f in floors] == [12.1]


def test_figure_log_nfe_axis_with_readable_ticks_and_one_floor_line_per_sample_count():
    fig = frontier_figure({"flow": FLOW, "ddpm": DDPM}).to_plotly_json()
    frechet = [t for t in fig["data"] if t["xaxis"] == "x"]
    accuracy = [t for t in fig["data"] if t["xaxis"] == "x2"]
    assert len(frechet) == len(accuracy) == 5
    assert list(frechet[2]["x"]) == [2, 8, 32] and list(frechet[2]["y"]) == [300.0, 80.0, 25.0]
    assert list(accuracy[2]["y"]) == pytest.approx([90.0] * 3)
    x = fig["layout"]["xaxis"]
    assert x["type"] == "log" and list(x["tickvals"]) == [1, 2, 5, 10, 20, 50, 100]
    assert list(x["ticktext"]) == ["1", "2", "5", "10", "20", "50", "100"]  # no bare "2 ... 9"
    assert frechet[0]["marker"]["symbol"] != frechet[4]["marker"]["symbol"]  # a marker per run
    y = fig["layout"]["yaxis"]
    assert y["type"] == "log" and list(y["ticktext"]) == ["10", "20", "50", "100", "200"]
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [12.1, 30.7]
    labels = [a["text"] for a in fig["layout"]["annotations"]]
    assert "real vs real, mnist-5k, 20 a class: 30.7" in labels
    with pytest.raises(ConfigError, match="no evaluation results to plot"):
        frontier_figure({"flow": RunEvaluation()})


def test_log_ticks():
    assert log_ticks(12, 300) == [10, 20, 50, 100, 200]  # within 1.5x of the data
    assert log_ticks(1, 1) == [1]


def test_png_of_stored_results(tmp_path):
    out = tmp_path / "frontier.png"
    assert write_frontier_png({"flow": FLOW, "ddpm": DDPM}, out) == 14
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 800
    unguided = replace(FLOW.cells[0], guidance=None, accuracy=None)
    assert write_frontier_png({"t": RunEvaluation((unguided,))}, out, guidance=[5]) == 1


def test_frontier_command_on_tiny_evaluated_runs(fake_run, tmp_path, capsys):
    runs = tmp_path / "classifier"
    flow, ddpm = fake_run("flow-class"), fake_run("ddpm-class")
    for run, samplers in ((flow, ("euler", "heun")), (ddpm, ("ddpm", "ddim"))):
        evaluate_run(
            run, (1, 5), samplers=samplers, steps=(1, 2), per_class=1, runs_dir=runs,
            classifier_config=TINY,
        )  # fmt: skip
    out = tmp_path / "docs" / "frontier"
    assert cli.main(["frontier", str(flow), str(ddpm), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}.png: 16 results of 2 runs\n"
    assert Image.open(f"{out}.png").format == "PNG"
    assert cli.main(["frontier", str(flow), "--guidance", "3", "--out", str(out)]) == 2
    assert "no evaluation results to plot" in capsys.readouterr().err
    (ddpm / "evaluation.json").write_text('{"format": 1, "cells": [{"frechet": []}]}')
    assert cli.main(["frontier", str(flow), str(ddpm), "--out", str(out)]) == 0
    out_text, err = capsys.readouterr()
    assert "8 results of 2 runs" in out_text
    assert err.startswith(f"warning: left out: {ddpm / 'evaluation.json'}: cell 0: ")
