"""The run record's reader: typed files (checked by training.jsontypes: test_jsontypes.py),
metrics as written, and a run with every part readable."""

import json

from training import runs
from training.runlock import Process
from training.runs import Summary, WandbInfo, list_runs, load_metrics, read_run


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
