"""Checkpoints load only as safetensors / torch.load(weights_only=True): a pickle that would run
code is refused and never runs. Run names cannot leave the runs folder."""

import ast
import os
import shutil
from pathlib import Path

import pytest
import torch
from reliability_helpers import ROOT, TINY, train

from training import cli
from training.checkpoints import CheckpointError, latest_checkpoint, load_state
from training.config import ConfigError
from training.pretrained import load_lab_model
from training.runs import safe_run_dir


class Payload:
    """Unpickling this calls os.system: it would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert train(runs, "run", "--steps", "4") == 0  # epochs 1 and 2
    return runs / "run"


def test_a_state_pt_that_runs_code_is_refused(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    marker = tmp_path / "pwned"
    evil = copy / "checkpoints/epoch-0002/state.pt"
    torch.save({"optimizer": Payload(marker), "scheduler": {}, "rng": {}, "step": 4}, evil)
    with pytest.raises(
        CheckpointError,
        match=f"{evil}: refused to load: the pickle asks to run code.*"
        "posix.system.*nothing was executed",
    ):
        load_state(latest_checkpoint(copy))
    capsys.readouterr()
    assert train(tmp_path, "run", "--resume", "--steps", "6") == 0  # falls back to epoch 1
    assert f"warning: {evil}: refused to load" in capsys.readouterr().err
    assert not marker.exists()


def test_weights_that_are_a_pickle_are_refused(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    marker = tmp_path / "pwned"
    torch.save({"w": Payload(marker)}, copy / "checkpoints/epoch-0002/model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"epoch-0002/model\.safetensors: not a readable safetensors"
    ):
        load_lab_model(copy)
    assert not marker.exists()


def test_no_unsafe_deserialization_in_the_code():
    """Every torch.load passes weights_only=True; no pickle.load(s), np.load(allow_pickle=True),
    torch.jit.load or yaml.load anywhere in samplers/, training/, dashboard/."""
    problems = []
    for path in [
        p for d in ("samplers", "training", "dashboard") for p in (ROOT / d).rglob("*.py")
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = ast.unparse(node.func.value)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            name = f"{owner}.{node.func.attr}"
            if (
                (name == "torch.load" and kw.get("weights_only") != "True")
                or name in ("pickle.load", "pickle.loads", "torch.jit.load", "yaml.load")
                or (
                    node.func.attr == "load"
                    and owner in ("np", "numpy")
                    and kw.get("allow_pickle") == "True"
                )
            ):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not problems, problems


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        ".",
        "..",
        "../x",
        "a/../../x",
        "a/b",
        "/etc",
        "/tmp/x",
        ".hidden",
        "..x",
        "a\\b",
        "bad\nname",
        "tab\tname",
    ],
)
def test_bad_run_names_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="invalid run name"):
        safe_run_dir(tmp_path, name)


def test_a_symlink_out_of_the_runs_folder_is_refused(tmp_path, capsys):
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    runs.mkdir()
    outside.mkdir()
    (runs / "link").symlink_to(outside)
    (runs / "inner").mkdir()
    with pytest.raises(ConfigError, match="symlink"):
        safe_run_dir(runs, "link")
    assert safe_run_dir(runs, "inner") == (runs / "inner").resolve()
    for name in ("link", "../outside", str(outside)):
        for extra in ([], ["--resume"]):
            assert (
                cli.main(
                    [
                        "flow-class",
                        *TINY,
                        "--steps",
                        "2",
                        "--runs-dir",
                        str(runs),
                        "--name",
                        name,
                        *extra,
                    ]
                )
                == 2
            )
            err = capsys.readouterr().err
            assert (
                err.startswith(f"python -m training: error: invalid run name {name!r}")
                and err.count("\n") == 1
            )
    assert list(outside.iterdir()) == []
