import pytest
import torch
from diffusers import DDPMScheduler

import samplers as S
from samplers.schedules import alpha_bar


def test_linear_alphas_cumprod_matches_diffusers():
    sched = DDPMScheduler(
        num_train_timesteps=300, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"
    )
    ab = S.linear_alphas_cumprod()
    assert ab.shape == (300,) and ab.dtype == torch.float32
    torch.testing.assert_close(ab, sched.alphas_cumprod)


def test_strided_and_spaced_timesteps():
    ts = S.strided_timesteps()
    assert ts[:2] == [990, 960] and ts[-2:] == [30, 0] and len(ts) == 34
    assert S.strided_timesteps(100, 30) == [100, 70, 40, 10, 0]
    assert S.spaced_timesteps(300, 300) == list(range(299, -2, -1))
    ts = S.spaced_timesteps(300, 50)
    assert len(ts) == 51 and ts[0] == 299 and ts[-1] == -1 and ts == sorted(ts, reverse=True)
    for bad in (0, 301):
        with pytest.raises(ValueError, match="num_steps"):
            S.spaced_timesteps(300, bad)
    with pytest.raises(ValueError):
        S.strided_timesteps(990, 0)


def test_alpha_bar_int_tensor_and_clean():
    ab = S.linear_alphas_cumprod()
    x = torch.zeros(3, 1, 2, 2)
    assert alpha_bar(ab, -1, x) == 1 and alpha_bar(ab, 5, x) == ab[5]
    out = alpha_bar(ab, torch.tensor([0, -1, 299]), x)
    assert out.shape == (3, 1, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.stack([ab[0], torch.tensor(1.0), ab[299]]))


def test_repaint_timesteps():
    ts = list(range(9, -2, -1))
    assert S.repaint_timesteps(ts) == ts
    out = S.repaint_timesteps(ts, jump_length=3, jump_n_sample=2)
    assert out[0] == 9 and out[-1] == -1
    steps = list(zip(out, out[1:], strict=False))
    assert all(abs(ts.index(a) - ts.index(b)) == 1 for a, b in steps)  # one entry at a time
    assert sum(b > a for a, b in steps) == 3 * 3  # three jump points, three entries back each
    assert out[:8] == [9, 8, 7, 6, 7, 8, 9, 8]
    with pytest.raises(ValueError):
        S.repaint_timesteps(ts, -1, 2)


def test_add_noise_and_renoise():
    ab = S.linear_alphas_cumprod()
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(
        S.add_noise(x0, 100, ab, eps), ab[100].sqrt() * x0 + (1 - ab[100]).sqrt() * eps
    )
    torch.testing.assert_close(S.add_noise(x0, -1, ab, eps), x0)
    per = S.add_noise(x0, torch.tensor([10, 200]), ab, eps)
    torch.testing.assert_close(per[1], S.add_noise(x0, 200, ab, eps)[1])
    torch.testing.assert_close(
        S.predict_denoised(S.add_noise(x0, 150, ab, eps), eps, 150, ab), x0, atol=1e-5, rtol=0
    )
    # renoise from the clean image is the forward process with the same noise draw
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(S.renoise(x0, -1, 50, ab, g1), S.add_noise(x0, 50, ab, generator=g2))
    with pytest.raises(ValueError, match="s < t"):
        S.renoise(x0, 50, 10, ab)
    # chaining q(x_t|x_s) keeps the marginal of q(x_t|x0): variance check on many samples
    big = torch.zeros(20000, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    x = S.renoise(S.add_noise(big, 40, ab, generator=g), 40, 120, ab, g)
    assert abs(x.var().item() - (1 - ab[120]).item()) < 0.01
