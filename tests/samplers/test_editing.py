"""SDEdit and inpainting (course 1.7), RePaint resampling, mask validation."""
import pytest
import torch

import samplers as S
from tests.samplers.test_iterative import AB, TS, ToyModel

IMAGE = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
MASK = torch.zeros(1, 1, 8, 8)
MASK[..., 2:6, 2:6] = 1


def test_sdedit_noises_to_i_start_then_denoises_from_there():
    model, seen = ToyModel(), []
    out = S.sdedit(model, IMAGE, 4, TS, AB, cond=torch.tensor([[0.2]]), generator=torch.Generator().manual_seed(1),
                   callback=lambda i, t, x, x0: seen.append((i, t)))
    assert seen[0] == (4, TS[4]) and [c[1] for c in model.calls] == TS[4:-1]
    g = torch.Generator().manual_seed(1)
    x = S.add_noise(IMAGE, TS[4], AB, generator=g)
    ref = S.iterative_denoise(ToyModel(), x, TS, AB, i_start=4, cond=torch.tensor([[0.2]]), generator=g)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("i_start", [-1, len(TS) - 1, 99])
def test_sdedit_i_start_out_of_range(i_start):
    with pytest.raises(ValueError, match=r"i_start must be in \[0, 9\]"):
        S.sdedit(ToyModel(), IMAGE, i_start, TS, AB)


def test_inpaint_keeps_the_unmasked_region():
    # ending at -1 (clean): the kept region is the original exactly
    out = S.inpaint(ToyModel(), IMAGE, MASK, TS, AB, generator=torch.Generator().manual_seed(0))
    keep = MASK.expand_as(out) == 0
    torch.testing.assert_close(out[keep], IMAGE[keep])
    assert not torch.allclose(out[~keep], IMAGE[~keep])
    # the course's strided schedule ends at t=0: kept region is the original noised to ab[0]
    ts = [250, 150, 50, 0]
    out = S.inpaint(ToyModel(), IMAGE, MASK, ts, AB, generator=torch.Generator().manual_seed(0))
    assert (out - IMAGE)[keep].abs().max() < 5 * (1 - AB[0]).sqrt()


def test_inpaint_with_repaint_resampling():
    model = ToyModel()
    out = S.inpaint(model, IMAGE, MASK.expand(2, 1, 8, 8), TS, AB, jump_length=2, jump_n_sample=3,
                    generator=torch.Generator().manual_seed(0))
    schedule = S.repaint_timesteps(TS, 2, 3)
    assert [c[1] for c in model.calls] == [a for a, b in zip(schedule, schedule[1:]) if b < a]
    assert len(model.calls) > len(TS) - 1 and out.shape == (2, 3, 8, 8)
    keep = MASK.expand_as(out) == 0
    torch.testing.assert_close(out[keep], IMAGE.expand_as(out)[keep])


@pytest.mark.parametrize("mask, message", [
    (torch.ones(1, 1, 4, 4), "does not fit"),
    (torch.ones(3, 1, 8, 8), "does not fit"),
    (torch.ones(1, 2, 8, 8), "does not fit"),
    (torch.ones(8, 8), "does not fit"),
    (torch.zeros(1, 1, 8, 8), "empty"),
    (torch.ones(1, 1, 8, 8), "whole image"),
    (MASK * 2, r"\[0, 1\]"),
])
def test_bad_masks(mask, message):
    with pytest.raises(ValueError, match=message):
        S.inpaint(ToyModel(), IMAGE.expand(2, 3, 8, 8), mask, TS, AB)
