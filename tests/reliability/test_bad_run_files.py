"""One bad run never breaks the others (issue 36 findings 1, 4 and 6): a run folder's files edited
to the wrong types, made special files or links, or made unreadable. Every page shows the bad run's
reason and still serves the good run, the reader lists it with its problem (it never vanishes),
and every command ends in one line, none in a traceback or a hang."""

import builtins
import contextlib
import errno
import io
import json
import os
import shutil

import pytest
from reliability_helpers import ROOT, train

from training import cli
from training.runs import list_runs, read_run

APP = str(ROOT / "dashboard" / "app.py")
PAGES = ("screens/runs.py", "screens/train.py", "screens/studio.py", "screens/sampler_lab.py")


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def replace_with(path, make):
    path.unlink()
    make(path)


@contextlib.contextmanager
def unreadable(folder):
    """The folder as another user sees one of mode 000: listing it, and every path inside it,
    raise PermissionError. The suite may run as root, whom the kernel lets read any folder, so
    besides the chmod the calls are refused here as the kernel refuses them to others."""
    inside = str(folder) + os.sep

    def refuse(real, on_folder):
        def call(path, *args, **kwargs):
            if not isinstance(path, int):
                p = os.fspath(path)
                if p.startswith(inside) or (on_folder and p == str(folder)):
                    raise PermissionError(errno.EACCES, "Permission denied", p)
            return real(path, *args, **kwargs)

        return call

    patches = [
        (os, "stat", False),
        (os, "lstat", False),
        (os, "open", True),
        (os, "scandir", True),
        (os, "listdir", True),
        (io, "open", True),
        (builtins, "open", True),
    ]
    real = [(module, name, getattr(module, name)) for module, name, _ in patches]
    real_access = os.access
    folder.chmod(0)
    try:
        for module, name, on_folder in patches:
            setattr(module, name, refuse(getattr(module, name), on_folder))
        os.access = lambda p, mode, **k: (
            False if os.fspath(p) == str(folder) else real_access(p, mode, **k)
        )
        yield
    finally:
        for module, name, fn in real:
            setattr(module, name, fn)
        os.access = real_access
        folder.chmod(0o755)


CELL = dict(
    checkpoint="epoch-0002",
    sampler="euler",
    steps=2,
    nfe=4,
    guidance=5.0,
    per_class=2,
    repeats=1,
    seed=0,
    precision="no",
    dataset="mnist-5k",
    accuracy=0.5,
    frechet=[1, 2],
    frechet_sd=None,
)
EVALUATION = {"format": 1, "floors": [], "cells": [CELL]}

# case: (fault applied to the run folder, what every page and command says, where it shows)
CASES = {
    "summary.json's process a string": (
        lambda run: edit_json(run / "summary.json", process="x"),
        "summary.json: 'process' must be a JSON object or null; got \"x\"",
        "run",
    ),
    "config.json's dataset a list": (
        lambda run: edit_json(run / "config.json", dataset=["x"]),
        'config.json: \'dataset\' must be one of "auto", "mnist", "mnist-5k", "fashion-mnist"; '
        'got ["x"]',
        "run",
    ),
    "an evaluation whose frechet is a list": (
        lambda run: (run / "evaluation.json").write_text(json.dumps(EVALUATION)),
        "evaluation.json: cell 0: frechet is a list; expected a number >= 0",
        "run",
    ),
    "an earlier lab's evaluation whose frechet is a list": (
        lambda run: edit_json(run / "summary.json", evaluation={"frechet": [1, 2]}),
        "summary.json: evaluation: frechet is a list; expected guidance -> value",
        "run",
    ),
    "meta.json's sha256 a number": (
        lambda run: edit_json(run / "checkpoints/epoch-0002/meta.json", sha256=5),
        "checkpoints/epoch-0002: meta.json: unreadable ('sha256' must be a JSON object; got 5)",
        "run",
    ),
    "meta.json's sampling_weights a file outside the run": (
        lambda run: edit_json(
            run / "checkpoints/epoch-0002/meta.json",
            sampling_weights="../../../good/checkpoints/epoch-0002/model.safetensors",
        ),
        "checkpoints/epoch-0002: meta.json: unreadable ('sampling_weights' must be one of "
        '"model.safetensors", "ema.safetensors"; got "../../../good/',
        "run",
    ),
    "summary.json a folder": (
        lambda run: replace_with(run / "summary.json", lambda p: p.mkdir()),
        "summary.json: a folder, not a regular file",
        "run",
    ),
    "summary.json a FIFO": (
        lambda run: replace_with(run / "summary.json", os.mkfifo),
        "summary.json: a FIFO, not a regular file",
        "run",
    ),
    "job.json a FIFO": (
        lambda run: os.mkfifo(run / "job.json"),
        "job.json: a FIFO, not a regular file",
        "run",
    ),
    "summary.json a link to /dev/zero": (
        lambda run: replace_with(run / "summary.json", lambda p: p.symlink_to("/dev/zero")),
        "summary.json: a symlink (not followed: the lab writes none)",
        "run",
    ),
    "config.json of 5 MB": (
        lambda run: (run / "config.json").write_text(" " * 5 * 2**20 + "{}"),
        "config.json: 5.0 MB, over the 4.0 MB it may have",
        "run",
    ),
    "metrics.jsonl rows of the wrong type": (
        lambda run: (run / "metrics.jsonl").write_text(
            (run / "metrics.jsonl").read_text().replace('"loss": ', '"loss": "n/a", "x": ', 1)
        ),
        "metrics.jsonl: 1 row left out (line 1: 'loss' must be a number; got \"n/a\")",
        "metrics",
    ),
    "hidden 100000 in config.json": (
        lambda run: edit_json(run / "config.json", hidden=100_000),
        "config.json: --hidden must be at most 512, got 100,000",  # training.config.LIMITS
        "run",
    ),
    "hidden 8 in config.json": (
        lambda run: edit_json(run / "config.json", hidden=8),
        "config.json: hidden=8, but checkpoint epoch-0001 was written with hidden=4",
        "run",
    ),
    "hidden 512 in config.json and every meta.json": (
        lambda run: [
            edit_json(path, hidden=512)
            for path in [run / "config.json", *run.glob("checkpoints/*/meta.json")]
        ],
        "does not fit the run's model",  # found on the meta device: 0.5 GB never asked for
        "model",
    ),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert train(runs, "good", "--steps", "4", "--device", "cpu") == 0  # epochs 1 and 2
    return runs / "good"


@pytest.fixture
def runs(good, tmp_path):
    """A runs folder with the good run and a copy of it, "bad", written after it (the newest)."""
    root = tmp_path / "runs"
    shutil.copytree(good, root / "good")
    bad = shutil.copytree(good, root / "bad")
    os.utime(bad / "config.json")
    return root


def page_texts(root, monkeypatch):
    """Every page on `root`: what each shows in warnings, errors, infos, captions and tables
    (AppTest fails the test on an exception, a hang over its timeout too)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DIFFUSION_LAB_RUNS", str(root))
    monkeypatch.setenv("DIFFUSION_LAB_BUNDLED_RUNS", "")
    monkeypatch.setenv("DIFFUSION_LAB_DEVICE", "cpu")
    at = AppTest.from_file(APP, default_timeout=60).run()
    texts = {}
    for page in PAGES:
        if page != PAGES[0]:
            at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        shown = [e.value for e in (*at.warning, *at.error, *at.info, *at.caption)]
        shown += [d.value.to_string() for d in at.dataframe]
        texts[page] = "\n".join(map(str, shown))
    return texts, at


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", CASES)
def test_a_bad_run_is_one_row_with_its_reason_and_the_good_run_works(
    runs, tmp_path, monkeypatch, capsys, case
):
    fault, reason, where = CASES[case]
    fault(runs / "bad")
    listed = {r.name: r for r in list_runs(runs)}
    assert set(listed) == {"good", "bad"}  # never left out
    assert listed["good"].problem is None and listed["good"].status == "finished"
    if where == "run":
        assert reason in listed["bad"].problem
    elif where == "metrics":
        assert reason == listed["bad"].metrics().problem
        assert len(listed["bad"].metrics().rows) == len(listed["good"].metrics().rows) - 1

    texts, at = page_texts(runs, monkeypatch)
    if where == "run":  # named on every page
        for page, text in texts.items():
            assert reason in text, (page, text)
    elif where == "metrics":  # beside the curves (runs) and the watched newest run (train)
        assert reason in texts["screens/runs.py"] and reason in texts["screens/train.py"]
    else:  # the model is refused before anything of the config's size is allocated
        assert reason in texts["screens/studio.py"] and reason in texts["screens/sampler_lab.py"]
    at.switch_page("screens/studio.py").run()
    at.selectbox(key="studio_run").set_value("good").run()
    at.button[0].click().run()  # the good run samples as before
    assert not at.exception and not at.error and at.image

    out = tmp_path / "x.npz"
    commands = {
        "sample": ["sample", str(runs / "bad"), "--out", str(out), "--steps", "2"],
        "resume": ["flow-class", "--runs-dir", str(runs), "--name", "bad", "--resume"],
    }
    for name, argv in commands.items():
        capsys.readouterr()
        status = cli.main(argv)
        err = capsys.readouterr().err
        assert status in (0, 2), (name, status, err)
        if status == 2:
            assert err.startswith("python -m training: error: ") and err.count("\n") == 1, err
    file, _, why = reason.partition(": ")
    if where == "run" and file in ("config.json", "summary.json") and "evaluation" not in why:
        # what a resume reads first: refused, naming the file
        assert cli.main(commands["resume"]) == 2
        assert f"{runs / 'bad' / file}: {why}" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_a_run_folder_that_cannot_be_read_is_listed_with_its_reason(runs, monkeypatch, capsys):
    bad = runs / "bad"
    with unreadable(bad):
        listed = {r.name: r for r in list_runs(runs)}
        assert set(listed) == {"good", "bad"}
        assert listed["bad"].problem == "the folder cannot be read"
        assert listed["good"].problem is None
        texts, _ = page_texts(runs, monkeypatch)
        for page, text in texts.items():
            assert "Run `bad` is left out: the folder cannot be read" in text, (page, text)
        for argv in (
            ["sample", str(bad), "--out", str(runs / "x.npz")],
            ["flow-class", "--runs-dir", str(runs), "--name", "bad", "--resume"],
        ):
            capsys.readouterr()
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "cannot be read" in err, err


def test_a_run_of_fifos_is_read_at_once(runs):
    """No reader waits for a FIFO's writer: read_run and the metrics answer at once."""
    bad = runs / "bad"
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        replace_with(bad / name, os.mkfifo)
    run = read_run(bad)
    assert run.config is None and run.status == "unreadable"
    assert run.problem.count("a FIFO, not a regular file") == 2
    assert run.metrics() == ([], "metrics.jsonl: a FIFO, not a regular file")
