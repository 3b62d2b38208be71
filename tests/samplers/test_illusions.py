"""Visual anagrams and hybrids: one batched call per step, exact formulas, reduction to plain
CFG."""

import pytest
import torch
import torchvision.transforms.functional as TF

import samplers as S
from tests.samplers.test_sampling import TS, VP, ToyModel

C1, C2, UNCOND = torch.tensor([[0.4]]), torch.tensor([[-0.3]]), torch.tensor([[0.0]])


def run(model, x):
    return S.sample_ddpm(model, x, VP, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("variance", [True, False])
def test_identical_prompts_reduce_to_plain_cfg(variance):
    x = torch.randn(2, 3, 8, 8)
    model = ToyModel(variance=variance)
    ref = run(S.Guided(model, C1, UNCOND, 7.0), x)
    ana = run(S.anagram_noise(model, [C1, C1, C1], ["identity"] * 3, UNCOND, 7.0), x)
    torch.testing.assert_close(ana, ref, atol=1e-5, rtol=1e-5)
    hyb = run(S.hybrid_noise(model, C1, C1, UNCOND, 7.0), x)
    torch.testing.assert_close(hyb, ref, atol=1e-5, rtol=1e-5)
    tri = run(S.three_band_noise(model, C1, C1, C1, UNCOND, 7.0), x)
    torch.testing.assert_close(tri, ref, atol=1e-5, rtol=1e-5)


def test_all_views_and_prompts_share_one_model_call():
    model = ToyModel()
    run(
        S.anagram_noise(model, [C1, C2, C1], ["identity", "flip", "rotate_90"], UNCOND, 7.0),
        torch.randn(2, 3, 16, 16),
    )
    assert [c[0] for c in model.calls] == [2 * 3 * 2] * (len(TS) - 1)


def test_anagram_noise_is_the_course_formula():
    model, x, t = ToyModel(), torch.randn(2, 3, 16, 16), 120
    net = S.CombinedNoise(model, ["identity", "flip"], [C1, C2], UNCOND, 7.0)
    out = net(x, t)
    o1 = S.guided_output(model, x, t, C1, UNCOND, 7.0)
    o2 = S.guided_output(model, x.flip(2), t, C2, UNCOND, 7.0).flip(2)
    torch.testing.assert_close(
        out, (o1 + o2) / 2
    )  # noise and variance both inverse-viewed and averaged


def test_hybrid_noise_is_low_far_plus_high_near():
    model, x, t = ToyModel(), torch.randn(1, 3, 64, 64), 500
    out = S.CombinedNoise(model, ["low_pass", "high_pass"], [C1, C2], UNCOND, 7.0, reduction="sum")(
        x, t
    )
    far, near = (
        S.guided_output(model, x, t, C1, UNCOND, 7.0),
        S.guided_output(model, x, t, C2, UNCOND, 7.0),
    )

    def blur(e):
        return TF.gaussian_blur(e, 33, 2.0)

    torch.testing.assert_close(out[:, :3], blur(far[:, :3]) + near[:, :3] - blur(near[:, :3]))
    torch.testing.assert_close(out[:, 3:], (far[:, 3:] + near[:, 3:]) / 2)


def test_bad_illusion_input():
    with pytest.raises(ValueError, match="one cond per view"):
        S.anagram_noise(ToyModel(), [C1], ["identity", "flip"])
    with pytest.raises(ValueError, match="unknown view"):
        S.anagram_noise(ToyModel(), [C1, C2], ["identity", "spin"])
    with pytest.raises(ValueError, match="keep the image shape"):
        run(
            S.anagram_noise(ToyModel(), [C1, C2], ["identity", "rotate_90"]),
            torch.randn(1, 3, 8, 16),
        )
