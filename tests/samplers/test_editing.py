"""SDEdit and inpainting (course 1.7), RePaint resampling, mask validation."""

import pytest
import torch

import samplers as S
from tests.samplers.test_sampling import AB, TS, VP, ToyModel

IMAGE = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
MASK = torch.zeros(1, 1, 8, 8)
MASK[..., 2:6, 2:6] = 1


def guided(model):
    return S.Guided(model, torch.tensor([[0.2]]))


def test_sdedit_noises_to_the_slice_start_then_denoises_from_there():
    model, seen = ToyModel(), []
    out = S.sdedit(
        guided(model),
        IMAGE,
        VP[4:],
        generator=torch.Generator().manual_seed(1),
        callback=lambda step: seen.append((step["i"], step["t"])),
    )
    assert seen[0] == (0, TS[4]) and [c[1] for c in model.calls] == TS[4:-1]
    g = torch.Generator().manual_seed(1)
    x = S.add_noise(IMAGE, TS[4], AB, generator=g)
    ref = S.sample_ddpm(guided(ToyModel()), x, VP[4:], generator=g)
    torch.testing.assert_close(out, ref)
    ddim = S.sdedit(
        guided(model),
        IMAGE,
        VP[4:],
        sampler=S.sample_ddim,
        generator=torch.Generator().manual_seed(1),
    )
    assert not torch.allclose(ddim, out)


def test_sdedit_needs_a_step_and_a_vp_schedule():
    with pytest.raises(ValueError, match="at least 2 timesteps"):
        S.sdedit(guided(ToyModel()), IMAGE, VP[len(TS) - 1 :])
    with pytest.raises(ValueError, match="VP schedule"):
        S.sdedit(guided(ToyModel()), IMAGE, S.Schedule.flow(5))


def test_inpaint_keeps_the_unmasked_region():
    # ending at -1 (clean): the kept region is the original exactly
    out = S.inpaint(guided(ToyModel()), IMAGE, MASK, VP, generator=torch.Generator().manual_seed(0))
    keep = MASK.expand_as(out) == 0
    torch.testing.assert_close(out[keep], IMAGE[keep])
    assert not torch.allclose(out[~keep], IMAGE[~keep])
    # the course's strided schedule ends at t=0: kept region is the original noised to ab[0]
    ts = S.Schedule.vp(AB, [250, 150, 50, 0])
    out = S.inpaint(guided(ToyModel()), IMAGE, MASK, ts, generator=torch.Generator().manual_seed(0))
    assert (out - IMAGE)[keep].abs().max() < 5 * (1 - AB[0]).sqrt()


def test_inpaint_with_repaint_resampling():
    model = ToyModel()
    out = S.inpaint(
        guided(model),
        IMAGE,
        MASK.expand(2, 1, 8, 8),
        VP,
        jump_length=2,
        jump_n_sample=3,
        generator=torch.Generator().manual_seed(0),
    )
    schedule = S.repaint_timesteps(TS, 2, 3)
    assert [c[1] for c in model.calls] == [
        a for a, b in zip(schedule, schedule[1:], strict=False) if b < a
    ]
    assert len(model.calls) > len(TS) - 1 and out.shape == (2, 3, 8, 8)
    keep = MASK.expand_as(out) == 0
    torch.testing.assert_close(out[keep], IMAGE.expand_as(out)[keep])


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(1, 1, 4, 4), "does not fit"),
        (torch.ones(3, 1, 8, 8), "does not fit"),
        (torch.ones(1, 2, 8, 8), "does not fit"),
        (torch.ones(8, 8), "does not fit"),
        (torch.zeros(1, 1, 8, 8), "empty"),
        (torch.ones(1, 1, 8, 8), "whole image"),
        (MASK * 2, r"\[0, 1\]"),
    ],
)
def test_bad_masks(mask, message):
    with pytest.raises(ValueError, match=message):
        S.inpaint(guided(ToyModel()), IMAGE.expand(2, 3, 8, 8), mask, VP)
