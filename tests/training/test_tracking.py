"""W&B mode resolution, the offline fallback, the local run record, and no secrets recorded."""

import json
import time

import pytest

from tests.fixtures.tiny_run import tiny_args
from training import cli
from training.config import RunConfig, make_options, start_plan
from training.runs import list_runs, read_metrics, safe_run_dir, write_json
from training.tracking import Tracker, WandbRun, key_configured, resolve_mode

KEY = "0123456789abcdef0123456789abcdef01234567"


def run_config(**options) -> RunConfig:
    cfg = make_options("flow-class", **options)
    plan = start_plan(
        cfg,
        dataset="mnist-5k",
        train_size=4500,
        pass_steps=71,
        world_size=1,
        device="cpu",
        mixed_precision="no",
    )
    return RunConfig(cfg, plan)


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return tmp_path


def test_mode_is_online_only_with_a_key(no_key, monkeypatch):
    assert not key_configured() and resolve_mode(None) == "offline"
    (no_key / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    (no_key / ".netrc").chmod(0o600)
    assert key_configured() and resolve_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) == "disabled" and resolve_mode("offline") == "offline"


def test_online_without_network_falls_back_to_offline_quickly(
    no_key, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    start = time.time()
    run = WandbRun(tmp_path, run_config(), None, "online")
    assert run.mode == "offline" and time.time() - start < 30
    info = run.info()
    run.finish()
    err = capsys.readouterr().err
    assert "logging offline" in err and f"wandb sync {tmp_path}/wandb/offline-run-*" in err
    assert info["sync_command"].startswith("wandb sync") and info["url"] is None


def test_offline_run_on_disk_and_no_secret_recorded(no_key, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert (
        cli.main(
            [
                "flow-time",
                *tiny_args("--steps", "2", wandb="offline"),
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    run = tmp_path / "flow-time"
    (offline,) = (run / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb")) and (offline / "files").is_dir()
    for path in run.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_run_record_resume_truncates_metrics_and_keeps_wall_time(no_key, tmp_path):
    cfg = run_config(wandb_mode="disabled")
    run = tmp_path / "r"
    t = Tracker(run, cfg)
    for step in (1, 2, 3):
        t.log_metrics({"step": step, "loss": 1.0 / step, "loss_t_bin": [None] * 10})
    t.record.update_summary(wall_time_s=10.0)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # killed mid-line
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    t2 = Tracker(run, cfg, resume_step=2)
    assert [r["step"] for r in read_metrics(run)] == [1, 2] and t2.wall_time() >= 10.0
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    assert [r.name for r in list_runs(tmp_path)] == ["r"]


def test_safe_run_dir_and_atomic_json(tmp_path):
    assert safe_run_dir(tmp_path, "ok-run") == (tmp_path / "ok-run").resolve()
    for bad in ("../x", "/etc", "a/../../x", "", ".."):
        with pytest.raises(ValueError, match="invalid run name"):
            safe_run_dir(tmp_path, bad)
    write_json(tmp_path / "s.json", {"a": 1})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
