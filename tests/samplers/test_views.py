"""Views: exact inverses, frequency bands that sum to the estimate, resolution scaling, errors."""

import pytest
import torch
import torchvision.transforms.functional as TF

import samplers as S
from samplers.views import FrequencyBand, scaled_blur

BIJECTIONS = [n for n in S.VIEW_NAMES if not n.endswith("_pass")]


@pytest.mark.parametrize("name", BIJECTIONS)
@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 1, 32, 32), (3, 6, 16, 16)])
def test_inverse_view_undoes_view(name, shape):
    view = S.get_view(name)
    x = torch.randn(shape)
    assert view.view(x).shape == x.shape
    assert torch.equal(view.inverse_view(view.view(x)), x)
    assert torch.equal(view.view(view.inverse_view(x)), x)
    if name != "identity":
        assert not torch.equal(view.view(x), x)


def test_named_views_do_what_they_say():
    x = torch.arange(2 * 16.0).view(1, 2, 4, 4)
    assert torch.equal(S.get_view("flip").view(x), torch.flip(x, dims=[2]))
    assert torch.equal(S.get_view("rotate_90").view(x), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(S.get_view("rotate_180").view(x), torch.rot90(x, 2, dims=(2, 3)))
    assert torch.equal(S.get_view("transpose").view(x), x.transpose(2, 3))
    assert torch.equal(S.get_view("negate").view(x), -x)
    patches = S.get_view("patch_permute", patch_size=2, seed=3).view(x)

    def blocks(y):
        return {
            tuple(y[0, :, i : i + 2, j : j + 2].flatten().tolist()) for i in (0, 2) for j in (0, 2)
        }

    assert blocks(patches) == blocks(x) and not torch.equal(patches, x)
    pixels = S.get_view("pixel_permute").view(x)
    assert torch.equal(pixels[0, 0].flatten().sort().values, x[0, 0].flatten())
    assert torch.equal(
        pixels[0, 1] - pixels[0, 0], torch.full((4, 4), 16.0)
    )  # same permutation per channel
    a, b = S.get_view("patch_permute", seed=1), S.get_view("patch_permute", seed=2)
    y = torch.randn(1, 1, 64, 64)
    assert torch.equal(a.view(y), S.get_view("patch_permute", seed=1).view(y)) and not torch.equal(
        a.view(y), b.view(y)
    )


def test_variance_follows_geometry_only():
    v = torch.rand(1, 3, 8, 8)
    assert torch.equal(S.get_view("flip").inverse_variance(v), v.flip(2))
    assert torch.equal(S.get_view("negate").inverse_variance(v), v)
    assert torch.equal(S.get_view("low_pass").inverse_variance(v), v)


@pytest.mark.parametrize("size", [28, 64])
def test_frequency_bands_sum_to_the_estimate(size):
    x = torch.randn(2, 3, size, size)
    low, high = S.get_view("low_pass"), S.get_view("high_pass")
    assert torch.equal(low.view(x), x)
    torch.testing.assert_close(low.inverse_view(x) + high.inverse_view(x), x)
    bands = [S.get_view(f"triple_{b}_pass").inverse_view(x) for b in ("low", "mid", "high")]
    torch.testing.assert_close(sum(bands), x)
    assert bands[0].std() < x.std() and bands[2].abs().mean() > 0


def test_blur_scaling_rule():
    for size, k, sigma in [(64, 33, 2.0), (256, 133, 8.0), (28, 15, 0.875)]:
        x = torch.randn(1, 1, size, size)
        torch.testing.assert_close(scaled_blur(x, 2.0, 33), TF.gaussian_blur(x, k, sigma))
    x = torch.randn(1, 3, 64, 64)
    mid = FrequencyBand(1, (1.0, 2.0)).inverse_view(x)
    b1 = TF.gaussian_blur(x, 33, 1.0)
    torch.testing.assert_close(mid, b1 - TF.gaussian_blur(b1, 33, 2.0))


def test_bad_views():
    with pytest.raises(ValueError, match="unknown view 'spin'.*flip.*low_pass"):
        S.get_view("spin")
    with pytest.raises(ValueError, match="divisible"):
        S.get_view("patch_permute", patch_size=5).view(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="band"):
        FrequencyBand(2, (2.0,))
