"""A disk that refuses writes (full, read-only): one clear error, exit status 1, the earlier
checkpoints and the run record intact, and a later --resume (space freed) ends bit-identical."""

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from reliability_helpers import assert_same_weights, epochs, train

import training.checkpoints as ck
from training import runs as runs_module
from training import tracking
from training.runs import read_metrics, read_summary


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = tmp_path_factory.mktemp("reference")
    assert train(runs, "full", "--steps", "8") == 0
    return runs / "full"


def snapshot(run: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in (run / "checkpoints").rglob("*")
        if p.is_file()
    }


def enospc(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def failing_checkpoint_file(monkeypatch):
    real = ck._write

    def write(path, data):
        if path.name == "state.pt" and ".tmp-epoch-0003" in path.parent.name:
            with open(path, "wb") as f:
                f.write(data[:100])  # what fit before the disk filled up
            raise enospc(path)
        real(path, data)

    monkeypatch.setattr(ck, "_write", write)


def failing_summary(monkeypatch):
    real = runs_module.os.replace

    def replace(src, dst):
        if Path(dst).name == "summary.json" and json.loads(Path(src).read_text()).get("epoch") == 3:
            raise enospc(dst)
        real(src, dst)

    monkeypatch.setattr(runs_module.os, "replace", replace)


def failing_metrics_line(monkeypatch):
    real = tracking.RunRecord.append_metrics

    def append(self, row):
        if row["step"] == 5:
            with open(self.metrics_path, "a") as f:
                f.write('{"step": 5, "lo')
            raise enospc(self.metrics_path)
        real(self, row)

    monkeypatch.setattr(tracking.RunRecord, "append_metrics", append)


@pytest.mark.parametrize(
    "fault, names",
    [
        (failing_checkpoint_file, "cannot write checkpoint epoch-0003 into"),
        (failing_summary, "summary.json"),
        (failing_metrics_line, "metrics.jsonl"),
    ],
)
def test_a_write_failing_with_no_space(tmp_path, reference, monkeypatch, capsys, fault, names):
    run = tmp_path / "cut"
    assert train(tmp_path, "cut", "--steps", "8", "--stop-after", "2") == 0
    before, summary_before = snapshot(run), read_summary(run)
    fault(monkeypatch)
    capsys.readouterr()
    assert train(tmp_path, "cut", "--resume") == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert line.startswith("python -m training: error: ") and "No space left on device" in line, (
        line
    )
    assert names in line
    assert snapshot(run) == before  # epochs 1-2 untouched, no temporary folder left
    assert not [p for p in run.rglob(".*tmp*")]
    summary = read_summary(run)  # valid JSON: marked failed, or (its own write failed) as it was
    assert summary["status"] == "failed" or summary == {
        **summary_before,
        "status": summary["status"],
    }
    monkeypatch.undo()
    assert train(tmp_path, "cut", "--resume") == 0  # space freed
    assert epochs(run) == [1, 2, 3, 4]
    assert_same_weights(run, reference, 4)
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 9))


def _mount(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
        ).returncode
        == 0
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (real ENOSPC / EROFS); needs root, as on the build machine."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount(disk, "size=4m"):
        pytest.skip(
            "mounting a tmpfs needs root (the injected-fault tests above cover the same paths)"
        )
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("kind", ["full", "read-only"])
def test_a_real_full_or_read_only_disk(small_disk, reference, capsys, kind):
    run = small_disk / "cut"
    assert train(small_disk, "cut", "--steps", "8", "--stop-after", "2") == 0
    before, summary_before = snapshot(run), (run / "summary.json").read_bytes()
    if kind == "full":
        free = shutil.disk_usage(small_disk).free
        (small_disk / "filler").write_bytes(b"\0" * (free - 8192))
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    capsys.readouterr()
    assert train(small_disk, "cut", "--resume") == 1
    err = capsys.readouterr().err
    reason = "No space left on device" if kind == "full" else "Read-only file system"
    assert "python -m training: error: " in err and reason in err, err[-1500:]
    assert snapshot(run) == before
    json.loads((run / "summary.json").read_text())  # still valid JSON (failed, or untouched)
    if kind == "full":
        (small_disk / "filler").unlink()
    else:
        assert (run / "summary.json").read_bytes() == summary_before
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert train(small_disk, "cut", "--resume") == 0
    assert_same_weights(run, reference, 4)
