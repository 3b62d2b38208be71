"""ddpm_step / ddim_step / sample_ddpm against diffusers' schedulers with the same generator."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

import samplers as S


def if_scheduler(variance_type, timesteps):
    sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type=variance_type,
        clip_sample=False,
        thresholding=False,
    )
    sched.set_timesteps(timesteps=timesteps)
    return sched


@pytest.mark.parametrize("variance_type", ["learned_range", "fixed_large"])
def test_ddpm_step_equals_diffusers(variance_type):
    ts = S.strided_timesteps()
    sched = if_scheduler(variance_type, ts)
    ab = sched.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g)
    channels = 6 if variance_type == "learned_range" else 3
    for i in [0, 5, 20, len(ts) - 2, len(ts) - 1]:  # includes t=30 -> 0 and the last t=0 -> -1
        t, t_prev = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        out = torch.rand(2, channels, 8, 8, generator=g) * 2 - 1
        ref = sched.step(out, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        eps, var = out[:, :3], (out[:, 3:] if channels == 6 else None)
        ours = S.ddpm_step(x, eps, t, t_prev, ab, var, generator=torch.Generator().manual_seed(i))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_ddpm_step_noise_drawn_once_only_when_t_positive():
    ab = S.linear_alphas_cumprod()
    x, eps = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    g = torch.Generator().manual_seed(3)
    S.ddpm_step(x, eps, 0, -1, ab, generator=g)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())
    S.ddpm_step(x, eps, 5, 4, ab, generator=g)
    ref = torch.Generator().manual_seed(3)
    torch.randn(1, 1, 4, 4, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_equals_diffusers(eta):
    sched = DDIMScheduler(
        num_train_timesteps=300,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )
    sched.set_timesteps(10)
    ab = S.linear_alphas_cumprod()
    x = torch.randn(2, 1, 6, 6)
    for t in sched.timesteps.tolist():
        eps = torch.randn(2, 1, 6, 6)
        ref = sched.step(eps, t, x, eta=eta, generator=torch.Generator().manual_seed(t)).prev_sample
        ours = S.ddim_step(x, eps, t, t - 30, ab, eta, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_sample_ddpm_equals_diffusers_loop():
    """A full learned-range loop with CFG against the diffusers IF-style loop."""
    ts = S.strided_timesteps(990, 90)
    sched = if_scheduler("learned_range", ts)
    w = torch.linspace(-0.5, 0.5, 6).view(1, 6, 1, 1)

    def model(x, t, cond):  # 6 channels: noise and variance values, depends on t and cond
        return torch.tanh(torch.cat([x, x], 1) * w + cond.view(-1, 1, 1, 1) + t / 1000)

    cond, uncond = torch.tensor([[0.3]]), torch.tensor([[-0.2]])
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = S.sample_ddpm(
        S.Guided(model, cond, uncond, 7.0),
        x0,
        S.Schedule.vp(sched.alphas_cumprod, ts),
        generator=torch.Generator().manual_seed(1),
    )
    g, x = torch.Generator().manual_seed(1), x0
    for t in sched.timesteps[:-1]:  # the course loop stops at timesteps[-1] = 0
        out = torch.cat([model(x, t, cond.expand(2, 1)), model(x, t, uncond.expand(2, 1))])
        (eps_c, eps_u), var = out[:, :3].chunk(2), out[:2, 3:]
        x = sched.step(
            torch.cat([eps_u + 7.0 * (eps_c - eps_u), var], 1), t, x, generator=g
        ).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)


def test_guided_output_is_one_batched_call_and_keeps_conditional_variance():
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        return torch.cat([x * cond.view(-1, 1, 1, 1), x + cond.view(-1, 1, 1, 1)], 1)

    x = torch.randn(3, 2, 4, 4)
    out = S.guided_output(model, x, 10, torch.tensor([[2.0]]), torch.tensor([[1.0]]), 5.0)
    assert calls == [6]
    torch.testing.assert_close(out[:, :2], x * 1 + 5 * (x * 2 - x * 1))
    torch.testing.assert_close(out[:, 2:], x + 2)
