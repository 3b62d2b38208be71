"""evaluation.json: typed cells and floors, merged by key, the results earlier labs stored in
summary.json still read, and a damaged record reported in one line per problem, never raised."""

import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from training.evaluation_record import (
    FILE,
    EvaluationCell,
    FrechetFloor,
    RunEvaluation,
    check_recordable,
    read_evaluation,
    record_evaluation,
)
from training.runs import RunFileError

BUNDLED = Path(__file__).resolve().parents[2] / "training" / "pretrained_runs"
FLOOR = FrechetFloor("mnist-5k", 20, 50, 30.5, 3.1, 0, 0.976)
CELL = EvaluationCell(
    checkpoint="epoch-0002",
    sampler="euler",
    steps=4,
    nfe=8,
    guidance=5.0,
    per_class=20,
    repeats=1,
    seed=0,
    precision="bf16",
    dataset="mnist-5k",
    accuracy=0.95,
    frechet=61.0,
    frechet_sd=None,
    seconds_per_1000=2.5,
    device="cpu",
    evaluated="2026-01-01T00:00:00+00:00",
)


@pytest.fixture
def run_dir(tmp_path):
    """A copy of the bundled flow-class-d32's record (no weights): results in summary.json."""
    run = tmp_path / "flow-class-d32"
    run.mkdir()
    for name in ("config.json", "summary.json"):
        shutil.copy(BUNDLED / "flow-class-d32" / name, run / name)
    return run


@pytest.mark.parametrize(
    "run, sampler, steps",
    [("flow-class-d32", "heun", 50), ("ddpm-class-d32", "ddpm", 100)],
)
def test_the_bundled_runs_results_in_summary_json_are_read(run, sampler, steps, tmp_path):
    """The bundled runs' first results, stored in summary.json as earlier labs did (their
    evaluation.json, read over them, holds the later sweeps)."""
    stored = json.loads((BUNDLED / run / "summary.json").read_text())["evaluation"]
    for name in ("config.json", "summary.json"):
        shutil.copy(BUNDLED / run / name, tmp_path / name)
    ev = read_evaluation(tmp_path)
    assert ev.problems == ()
    assert [(c.sampler, c.steps, c.guidance, c.nfe) for c in ev.cells] == [
        (sampler, steps, 1.0, steps * (2 if sampler == "heun" else 1)),
        (sampler, steps, 5.0, steps * (2 if sampler == "heun" else 1) * 2),  # the CFG pair
    ]
    for c in ev.cells:
        key = f"{c.guidance:g}"
        assert c.frechet == stored["frechet"][key] and c.accuracy == stored["accuracy"][key]
        assert c.frechet_sd == stored["frechet_sd"][key] and c.repeats == stored["repeats"]
        assert c.checkpoint == "epoch-0002" and c.seconds_per_1000 is None
    (floor,) = ev.floors
    assert (floor.mean, floor.sd, floor.draws) == (
        stored["frechet_floor"],
        stored["frechet_floor_sd"],
        50,
    )
    assert ev.ratio(ev.cells[0]) == pytest.approx(stored["frechet"]["1"] / stored["frechet_floor"])


def test_a_summary_of_one_floor_draw_and_an_unconditional_model(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = summary["evaluation"]
    for key in ("frechet_floor_sd", "frechet_floor_draws", "frechet_sd", "repeats", "precision"):
        del ev[key]
    ev["frechet"], ev["accuracy"] = {"none": 40.0}, {"none": None}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    read = read_evaluation(run_dir)
    ((cell,), (floor,)) = read.cells, read.floors
    assert (cell.guidance, cell.accuracy, cell.nfe, cell.repeats, cell.precision) == (
        None,
        None,
        100,
        1,
        None,
    )
    assert floor.draws == 1 and floor.sd is None and read.problems == ()


def test_new_results_join_by_key_and_replace_the_old_of_the_same_key(run_dir):
    summary_before = (run_dir / "summary.json").read_text()
    old = read_evaluation(run_dir).cells
    same_key = replace(old[1], frechet=300.0, repeats=1, frechet_sd=None, evaluated="2026-01-02")
    record_evaluation(run_dir, [CELL, same_key], [FLOOR])
    ev = read_evaluation(run_dir)
    assert ev.cells == (old[0], same_key, CELL) and len(ev.floors) == 2
    assert ev.floor(CELL) == FLOOR and ev.ratio(CELL) == pytest.approx(61.0 / 30.5)
    assert (run_dir / "summary.json").read_text() == summary_before  # never rewritten
    newer = replace(CELL, frechet=50.0, evaluated="2026-01-03T00:00:00+00:00")
    record_evaluation(run_dir, [replace(CELL, steps=8, nfe=16), newer])
    stored = json.loads((run_dir / FILE).read_text())
    assert stored["format"] == 1 and [c["frechet"] for c in stored["cells"]] == [50.0, 300.0, 61.0]
    assert read_evaluation(run_dir).latest() == (newer,)  # the newest setting's cells
    assert stored["floors"] == [asdict(FLOOR)]


def _cell(**changes):
    return {**asdict(CELL), **changes}


DAMAGED_CELLS = {
    "frechet a list": (_cell(frechet=[1, 2]), "frechet is a list; expected a number >= 0"),
    "frechet a text": (_cell(frechet="n/a"), "frechet is the text 'n/a'; expected a number >= 0"),
    "frechet NaN": (_cell(frechet=float("nan")), "frechet is nan; expected a number >= 0"),
    "accuracy above 1": (
        _cell(accuracy=1.5),
        "accuracy is 1.5; expected a number in [0, 1] or null",
    ),
    "steps a boolean": (
        _cell(steps=True),
        "steps is true; expected an integer in [1, 1,000,000]",
    ),
    "per_class huge": (
        _cell(per_class=10**12),
        "per_class is 1000000000000; expected an integer in [1, 1,000,000]",
    ),
    "sampler too long": (
        _cell(sampler="x" * 100),
        "sampler is the text 'xxxxxxxxxxxxxxxxxxxx'...; expected a text of 1 to 64 characters",
    ),
    "sampler unknown": (_cell(sampler="warp"), "sampler 'warp' is not one the lab knows"),
    "frechet missing": (
        {k: v for k, v in asdict(CELL).items() if k != "frechet"},
        "frechet is missing",
    ),
    "not an object": ([1, 2], "is a list; expected an object"),
}


@pytest.mark.parametrize("case", DAMAGED_CELLS)
def test_a_damaged_cell_is_one_problem_line_the_others_are_read_and_nothing_is_written(
    run_dir, case
):
    bad, problem = DAMAGED_CELLS[case]
    record_evaluation(run_dir, [CELL], [FLOOR])
    doc = json.loads((run_dir / FILE).read_text())
    doc["cells"].append(bad)
    text = json.dumps(doc)
    (run_dir / FILE).write_text(text)
    ev = read_evaluation(run_dir)
    assert ev.problems == (f"{run_dir / FILE}: cell 1: {problem}",)
    assert CELL in ev.cells and len(ev.cells) == 3  # two from summary.json, one from the file
    with pytest.raises(RunFileError, match="fix or remove the file; nothing was changed"):
        record_evaluation(run_dir, [replace(CELL, steps=8)])
    with pytest.raises(RunFileError, match="cell 1"):
        check_recordable(run_dir)
    assert (run_dir / FILE).read_text() == text


def _fifo(path):
    os.mkfifo(path)


def _link(path):
    outside = path.parent.parent / "outside.json"
    outside.write_text(json.dumps(RunEvaluation((CELL,)).to_json()))
    path.symlink_to(outside)


DAMAGED_FILES = {
    "not JSON": (lambda p: p.write_text('{"cells": ['), "not valid JSON"),
    "a list": (lambda p: p.write_text("[]"), "is a list; expected an object"),
    "cells an object": (
        lambda p: p.write_text('{"format": 1, "cells": {}}'),
        "cells is an object; expected a list",
    ),
    "a newer format": (lambda p: p.write_text('{"format": 2}'), "format 2; this lab reads 1"),
    "too large": (
        lambda p: p.write_text(" " * (5 << 20)),
        "is 5,242,880 bytes; results the lab writes stay under 4 MiB",
    ),
    "a FIFO": (_fifo, "is not a plain file"),
    "a folder": (lambda p: p.mkdir(), "is not a plain file"),
    "a symlink": (_link, "is not a plain file"),
}


@pytest.mark.parametrize("case", DAMAGED_FILES)
def test_a_damaged_file_is_one_problem_line_never_an_exception(run_dir, case):
    damage, problem = DAMAGED_FILES[case]
    damage(run_dir / FILE)
    ev = read_evaluation(run_dir)  # a FIFO would hang a reader that opened it
    assert len(ev.problems) == 1 and problem in ev.problems[0], ev.problems
    assert ev.problems[0].startswith(str(run_dir / FILE)) and "\n" not in ev.problems[0]
    assert len(ev.cells) == 2  # what summary.json holds is still read
    with pytest.raises(RunFileError):
        record_evaluation(run_dir, [CELL])


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda ev: "x", "evaluation: is the text 'x'; expected an object"),
        (
            lambda ev: {**ev, "frechet": [1]},
            "evaluation: frechet is a list; expected guidance -> value",
        ),
        (
            lambda ev: {**ev, "frechet": {"1": {"a": 1}}},
            "evaluation: guidance '1': frechet is an object; expected a number >= 0",
        ),
        (
            lambda ev: {**ev, "steps": "50"},
            "evaluation: guidance '1': steps is the text '50'; expected an integer",
        ),
    ],
)
def test_damaged_results_in_summary_json_are_problems_too(run_dir, damage, problem):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["evaluation"] = damage(summary["evaluation"])
    (run_dir / "summary.json").write_text(json.dumps(summary))
    record_evaluation(run_dir, [CELL], [FLOOR])  # the record itself is fine
    ev = read_evaluation(run_dir)
    assert CELL in ev.cells and problem in ev.problems[0], ev.problems
    assert ev.problems[0].startswith(str(run_dir / "summary.json"))


def test_a_summary_json_that_does_not_read_is_a_problem(run_dir):
    (run_dir / "summary.json").write_text('{"status": "fini')
    ev = read_evaluation(run_dir)
    assert ev.cells == () and ev.problems[0].startswith(f"{run_dir / 'summary.json'}: not valid")
    with pytest.raises(RunFileError, match="not valid JSON"):
        check_recordable(run_dir)
