"""Truncated, corrupted, mismatched or foreign checkpoints: loading names the file and the reason;
`--resume` falls back to the previous good checkpoint, says so in one line, and ends exact."""

import hashlib
import json
import re
import shutil

import pytest
import torch
from reliability_helpers import assert_same_weights, epochs, train
from safetensors.torch import load_file, save_file

from training.checkpoints import CheckpointError
from training.pretrained import load_lab_model
from training.runs import load_run_config
from training.trainer import Trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`cut`: epochs 1-3 of an 8-step flow-class run; `full`: the whole run; `other`: a ddpm-class
    run
    (same UNet shapes, another experiment)."""
    runs = tmp_path_factory.mktemp("runs")
    assert train(runs, "full", "--steps", "8") == 0
    assert train(runs, "cut", "--steps", "8", "--stop-after", "3") == 0
    assert train(runs, "other", "--steps", "2", experiment="ddpm-class") == 0
    return runs


def flip_bytes(path, at=0.6):
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i : i + 8] = bytes(b ^ 0xFF for b in data[i : i + 8])
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def wrong_shapes(path):
    w = {
        k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.dim() else v
        for k, v in load_file(path).items()
    }
    save_file(w, path)


def optimizer_shapes(path):
    """A well-formed state.pt (its checksum updated too) whose Adam moments do not fit the model."""
    state = torch.load(path, weights_only=True)
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
    torch.save(state, path)
    meta = json.loads((path.parent / "meta.json").read_text())
    meta["sha256"]["state.pt"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / "meta.json").write_text(json.dumps(meta))


CASES = {  # name: (file of epoch 3, corruption, message, does load_lab_model fail)
    "bad bytes in the weights": (
        "model.safetensors",
        flip_bytes,
        r"model\.safetensors: corrupted",
        True,
    ),
    "garbage weights header": (
        "model.safetensors",
        lambda p: flip_bytes(p, 0.001),
        r"model\.safetensors: not a readable safetensors file",
        True,
    ),
    "truncated weights": (
        "model.safetensors",
        truncate,
        r"model\.safetensors: not a readable",
        True,
    ),
    "truncated state": ("state.pt", truncate, r"state\.pt: cannot load training state", False),
    "weights of other shapes": (
        "model.safetensors",
        wrong_shapes,
        r"model\.safetensors: does not fit the run's model: .*instead of",
        True,
    ),
    "optimizer state of other shapes": (
        "state.pt",
        optimizer_shapes,
        r"state\.pt: does not fit this run \(optimizer exp_avg",
        False,
    ),
    "unreadable meta.json": ("meta.json", truncate, r"meta\.json: unreadable", None),
    "another experiment's weights": (
        "model.safetensors",
        None,
        r"model\.safetensors: weights of a 'ddpm-class' run, not of 'flow-class'",
        True,
    ),
    "another experiment's checkpoint": (
        "meta.json",
        None,
        r"meta\.json: a checkpoint of 'ddpm-class', but the run is 'flow-class'",
        True,
    ),
}


def corrupt(runs, tmp_path, case):
    run = tmp_path / "cut"
    shutil.copytree(runs / "cut", run)
    name, fn, *_ = CASES[case]
    target = run / "checkpoints/epoch-0003"
    if case == "another experiment's weights":
        shutil.copy(runs / "other/checkpoints/epoch-0001/model.safetensors", target / name)
    elif case == "another experiment's checkpoint":
        shutil.rmtree(target)
        shutil.copytree(runs / "other/checkpoints/epoch-0001", target)
    else:
        fn(target / name)
    return run, target / name


def resume(run):
    return Trainer(load_run_config(run).options, run.parent, resume=True)


@pytest.mark.parametrize("case", CASES)
def test_load_names_the_file_and_resume_falls_back(runs, tmp_path, capsys, case):
    run, bad_file = corrupt(runs, tmp_path, case)
    message, load_fails = CASES[case][2], CASES[case][3]
    if load_fails:
        with pytest.raises(CheckpointError, match=re.escape(str(bad_file.parent)) + ".*") as e:
            load_lab_model(run)
        assert re.search(message, str(e.value)), e.value
    elif load_fails is False:  # sampling needs only the weights, which are intact
        assert load_lab_model(run).checkpoint.name == "epoch-0003"
    capsys.readouterr()
    trainer = resume(run)
    assert trainer.step == 4 and trainer.resume_from.path.name == "epoch-0002"
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"warning: {bad_file}: ") and re.search(message, line), line
    assert line.endswith("resuming from epoch-0002 (step 4) instead"), line


def test_resume_after_fallback_ends_bit_identical(runs, tmp_path):
    run, _ = corrupt(runs, tmp_path, "bad bytes in the weights")
    assert train(tmp_path, "cut", "--resume") == 0
    assert epochs(run) == epochs(runs / "full") == [1, 2, 3, 4]
    for epoch in (3, 4):  # epoch 3 was rewritten from epoch 2's state
        assert_same_weights(run, runs / "full", epoch)


def test_every_checkpoint_bad_is_one_clear_error(runs, tmp_path, capsys):
    run = tmp_path / "cut"
    shutil.copytree(runs / "cut", run)
    for p in (1, 2, 3):
        truncate(run / f"checkpoints/epoch-{p:04d}/state.pt")
    before = (run / "summary.json").read_text()
    assert train(tmp_path, "cut", "--resume") == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training: error: --resume: no checkpoint of run 'cut' loads: ")
    assert all(f"epoch-{p:04d}/state.pt: cannot load training state" in err for p in (1, 2, 3))
    assert (run / "summary.json").read_text() == before  # nothing was touched
    assert json.loads(before)["status"] == "running"
