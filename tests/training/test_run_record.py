"""The run record's reader: typed JSON (training.jsontypes), metrics as written, and a run with
every part readable."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from training import runs
from training.jsontypes import JsonTypeError, from_json
from training.runlock import Process
from training.runs import Summary, WandbInfo, list_runs, load_metrics, read_run


@dataclass(frozen=True)
class Inner:
    pid: int
    host: str = ""


@dataclass(frozen=True)
class Outer:
    name: str
    kind: Literal["a", "b"] = "a"
    rate: float = 0.0
    inner: Inner | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    steps: tuple[int, ...] = ()
    where: Path = Path(".")


def test_from_json_reads_every_kind_of_field():
    obj = from_json(
        Outer,
        {
            "name": "x",
            "kind": "b",
            "rate": 3,
            "inner": {"pid": 7},
            "scores": {"1": 0.5, "none": None},
            "steps": [1, 2],
            "where": "runs/x",
            "unknown": "ignored",
        },
    )
    assert obj == Outer("x", "b", 3.0, Inner(7), {"1": 0.5, "none": None}, (1, 2), Path("runs/x"))
    assert isinstance(obj.rate, float)


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "'name' is missing"),
        ({"name": 1}, "'name' must be a string, not 1"),
        ({"name": "x", "kind": "c"}, "'kind' must be one of 'a', 'b', not \"c\""),
        ({"name": "x", "rate": True}, "'rate' must be a number, not true"),
        ({"name": "x", "inner": "x"}, "'inner' must be an object, not \"x\""),
        ({"name": "x", "inner": {"pid": 1.5}}, "'inner.pid' must be an integer, not 1.5"),
        ({"name": "x", "scores": {"1": "n/a"}}, "'scores.1' must be a number, not \"n/a\""),
        ({"name": "x", "steps": [1, "2"]}, "'steps[1]' must be an integer, not \"2\""),
        ([], "must be an object, not []"),
    ],
)
def test_from_json_names_the_field_that_does_not_fit(data, message):
    with pytest.raises(JsonTypeError) as e:
        from_json(Outer, data)
    assert str(e.value).startswith(message), str(e.value)


def test_a_summary_reads_back_as_written(tmp_path):
    summary = Summary(
        "finished", 2.0, 4, 1.5, 0.3, None, WandbInfo("offline", id="ab"), Process(1, 2.0, "h")
    )
    run = tmp_path / "r"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary.to_dict()))
    assert read_run(run).summary == summary
    assert "error" not in summary.to_dict()  # None fields are left out


def rows(*steps):
    return "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps)


def test_metrics_leave_out_what_the_trainer_does_not_write(tmp_path, monkeypatch):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text(rows(1, 2) + '{"step": 3, "lo')  # being written
    assert load_metrics(run) == ([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], None)
    (run / "metrics.jsonl").write_text(rows(1) + "garbage\n" + '{"step": true}\n' + rows(4))
    log = load_metrics(run)
    assert [r["step"] for r in log.rows] == [1, 4]
    assert log.problem == "metrics.jsonl: 2 rows left out (line 2: not valid JSON)"
    monkeypatch.setattr(runs, "MAX_METRICS_BYTES", 100)  # a log longer than the bound
    (run / "metrics.jsonl").write_text(rows(*range(1, 40)))
    log = load_metrics(run)
    assert log.rows[-1]["step"] == 39 and 1 < len(log.rows) < 39  # its end, whole rows
    assert log.problem == "metrics.jsonl: longer than 100 bytes: only its end was read"


def test_list_runs_lists_every_run_folder_and_only_those(tmp_path):
    for name, files in {
        "ok": {"config.json": "{}"},
        "summary-only": {"summary.json": '{"status": "finished"}'},
        "job-only": {"job.json": "[]"},
        "no-record": {"notes.txt": "x"},
        ".hidden": {"config.json": "{}"},
    }.items():
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file).write_text(text)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "ok")
    found = {r.name: r for r in list_runs(tmp_path)}
    assert set(found) == {"ok", "summary-only", "job-only", "link"}
    assert found["summary-only"].status == "finished" and found["summary-only"].problem is None
    assert found["job-only"].problem == "job.json: not a JSON object"
    assert found["link"].problem == "a symlink, not a run folder (not followed)"
    assert found["ok"].problem.startswith("config.json: not a run config")
