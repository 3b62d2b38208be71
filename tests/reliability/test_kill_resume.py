"""SIGKILL at chosen and at random points, mid checkpoint write included: `--resume` continues from
the last complete checkpoint and ends bit-identical to an uninterrupted run (CPU, same seed)."""

import random
import signal

import pytest
from reliability_helpers import (
    assert_same_weights,
    epochs,
    kill_at_step,
    metric_rows,
    spawn,
    train,
    wait,
)

from training.runs import read_summary

STEPS = 12  # 6 epochs of 2 steps: checkpoints after steps 2, 4, ..., 12
pytestmark = pytest.mark.slow  # child processes: ~10 s each on the 2-core CI machine


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = tmp_path_factory.mktemp("reference")
    assert train(runs, "full", "--steps", str(STEPS)) == 0
    return runs / "full"


def assert_matches_reference(run, reference):
    assert read_summary(run)["status"] == "finished"
    assert epochs(run) == epochs(reference)
    for epoch in epochs(reference):
        assert_same_weights(run, reference, epoch)
    assert metric_rows(run) == metric_rows(reference)
    assert not list((run / "checkpoints").glob(".tmp-*")) and not list(
        (run / "checkpoints").glob(".old-*")
    )


def test_kills_inside_checkpoint_writes(tmp_path, reference):
    run = tmp_path / "cut"
    # killed with half of epoch 2's weights written: only epoch 1 is complete
    status, err = wait(
        spawn(tmp_path, "cut", "--steps", str(STEPS), fault="write:2:model.safetensors:0.5")
    )
    assert status == -signal.SIGKILL, err
    (partial,) = (run / "checkpoints").glob(".tmp-epoch-0002-*")
    assert (partial / "model.safetensors").stat().st_size > 0 and not (
        partial / "meta.json"
    ).exists()
    assert epochs(run) == [1] and read_summary(run)["status"] == "running"

    # resumed from epoch 1, killed writing epoch 4's meta.json (its weights and state were complete)
    status, err = wait(spawn(tmp_path, "cut", "--resume", fault="write:4:meta.json:0.3"))
    assert status == -signal.SIGKILL, err
    assert epochs(run) == [1, 2, 3]
    assert (next((run / "checkpoints").glob(".tmp-epoch-0004-*")) / "state.pt").is_file()

    # resumed from epoch 3, killed right after epoch 5 was renamed into place, before its
    # bookkeeping
    status, err = wait(spawn(tmp_path, "cut", "--resume", fault="after-save:5"))
    assert status == -signal.SIGKILL, err
    assert epochs(run) == [1, 2, 3, 4, 5]

    assert train(tmp_path, "cut", "--resume") == 0
    assert_matches_reference(run, reference)


def test_kills_at_random_points(tmp_path, reference):
    """Three real SIGKILLs from outside at seeded random moments (mid step, preview, checkpoint or
    metrics line), each after a checkpoint, each resumed; then a resume to the end."""
    rng = random.Random(6)
    run, landed = tmp_path / "cut", []
    proc = spawn(tmp_path, "cut", "--steps", str(STEPS))
    for low, high in ((3, 5), (6, 8), (9, 10)):
        step = rng.randint(max(low, epochs(run)[-1] * 2 + 1 if epochs(run) else low), high)
        delay = rng.uniform(0.0, 0.05)
        kill_at_step(proc, run, step, delay)
        status, err = wait(proc)
        assert status == -signal.SIGKILL, err
        landed.append(
            (
                step,
                round(delay, 3),
                epochs(run),
                sorted(p.name for p in (run / "checkpoints").glob(".*")),
            )
        )
        proc = spawn(tmp_path, "cut", "--resume") if high < 10 else None
    assert train(tmp_path, "cut", "--resume") == 0, landed
    assert_matches_reference(run, reference)


def test_a_kill_after_the_last_checkpoint_is_finished_by_a_resume(tmp_path, reference, capsys):
    """Killed after its last checkpoint was renamed into place, before its record said finished:
    --resume redoes the last epoch's end (preview, checkpoint, record) and matches; a second
    --resume has nothing left to do."""
    run, last = tmp_path / "cut", STEPS // 2
    status, err = wait(spawn(tmp_path, "cut", "--steps", str(STEPS), fault=f"after-save:{last}"))
    assert status == -signal.SIGKILL, err
    assert read_summary(run)["status"] == "running" and epochs(run)[-1] == last
    assert train(tmp_path, "cut", "--resume") == 0
    assert_matches_reference(run, reference)
    assert train(tmp_path, "cut", "--resume") == 2
    assert f"has trained {STEPS} steps already" in capsys.readouterr().err
