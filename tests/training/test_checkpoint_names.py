"""Mid-epoch checkpoints (a stopped run): named by step, ordered by step, pruned once superseded."""

import pytest
import torch

from training.checkpoints import (
    CheckpointError,
    checkpoint_folders,
    checkpoint_name,
    find_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    save_checkpoint,
)
from training.figures import _pick_checkpoints


def save(run, epoch, step=None):
    return save_checkpoint(
        run,
        epoch,
        model={"w": torch.zeros(1)},
        state={},
        step=step,
        meta={"experiment": "flow-class", "step": step or 10 * epoch},
    )


def names(run):
    return [p.name for p in checkpoint_folders(run)]


def test_names_sort_in_step_order(tmp_path):
    assert checkpoint_name(2) == "epoch-0002"
    assert checkpoint_name(2, 25) == "epoch-0002-step-00000025"
    for epoch, step in [(3, None), (2, 25), (1, None), (2, None), (2, 7)]:
        save(tmp_path, epoch, step)
    assert names(tmp_path) == [
        "epoch-0001",
        "epoch-0002",
        "epoch-0002-step-00000007",
        "epoch-0002-step-00000025",
        "epoch-0003",
    ]
    ckpts = list_checkpoints(tmp_path)
    assert [c.partial for c in ckpts] == [False, False, True, True, False]
    assert [c.epoch for c in ckpts] == [1, 2, 2, 2, 3]  # epochs complete
    (tmp_path / "checkpoints" / "epoch-0002-step-x").mkdir()  # not a checkpoint name
    assert "epoch-0002-step-x" not in names(tmp_path)


def test_pruning_keeps_only_the_newest_partial_and_not_in_the_count(tmp_path):
    for epoch in (1, 2, 3):
        save(tmp_path, epoch)
    save(tmp_path, 3, 35)
    save(tmp_path, 3, 37)
    prune_checkpoints(tmp_path, keep=2, milestones=(1,))
    # the newest checkpoint is a partial one: kept (a resume starts there), the older partial goes;
    # the two most recent epoch checkpoints and the milestone stay
    assert names(tmp_path) == ["epoch-0001", "epoch-0002", "epoch-0003", "epoch-0003-step-00000037"]
    save(tmp_path, 4)
    prune_checkpoints(tmp_path, keep=2, milestones=(1,))
    assert names(tmp_path) == ["epoch-0001", "epoch-0003", "epoch-0004"]


def test_an_epoch_number_names_the_end_of_epoch_checkpoint(tmp_path):
    save(tmp_path, 1)
    save(tmp_path, 2, 25)  # stopped in epoch 3, two epochs complete; epoch-0002 pruned
    assert find_checkpoint(tmp_path, None).path.name == "epoch-0002-step-00000025"  # latest
    assert find_checkpoint(tmp_path, "epoch-0002-step-00000025").partial
    assert find_checkpoint(tmp_path, 1).path.name == "epoch-0001"
    # as the CLIs pass it: a number string, padded or not
    assert find_checkpoint(tmp_path, "1").path == find_checkpoint(tmp_path, "0001").path
    with pytest.raises(CheckpointError, match="no checkpoint 2"):
        find_checkpoint(tmp_path, 2)
    assert [c.path.name for c in _pick_checkpoints(tmp_path, (1, 2))] == ["epoch-0001"]


def test_an_unreadable_checkpoint_is_named_never_passed_over(tmp_path):
    for epoch in (1, 2, 3):
        save(tmp_path, epoch)
    (tmp_path / "checkpoints" / "epoch-0003" / "meta.json").write_text('{"experi')
    for asked in (None, 3, "epoch-0003"):  # the latest, by number, by name
        with pytest.raises(
            CheckpointError,
            match=r"epoch-0003/meta.json: unreadable .*; readable "
            r"checkpoints: epoch-0001, epoch-0002$",
        ):
            find_checkpoint(tmp_path, asked)
    assert find_checkpoint(tmp_path, 2).path.name == "epoch-0002"
    (tmp_path / "checkpoints" / "epoch-0002" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="epoch-0002/meta.json: missing"):
        find_checkpoint(tmp_path, "2")
