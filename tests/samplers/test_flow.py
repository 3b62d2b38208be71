"""flow_sample: diffusers equality after converting conventions, accuracy order, CFG, callback."""
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import samplers as S
from tests.samplers.test_oracle import MU, SD, noise, velocity_oracle


def toy_velocity(x, t, cond=None):
    shift = 0.0 if cond is None else cond.view(-1, 1, 1, 1)
    return torch.sin(3 * x) * (1 + t.view(-1, 1, 1, 1)) + shift


def test_euler_equals_diffusers_flow_match_euler():
    """diffusers: sigma = 1 is noise, model output = noise - data. Ours: t = 1 - sigma, v = -output."""
    n = 12
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(sigmas=[1 - k / n for k in range(n)])
    x0 = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    x = x0
    for i, timestep in enumerate(sched.timesteps):
        sigma = sched.sigmas[i]
        out = -toy_velocity(x, (1 - sigma).expand(x.shape[0]))
        x = sched.step(out, timestep, x).prev_sample
    torch.testing.assert_close(S.flow_sample(toy_velocity, x0, n), x, atol=1e-5, rtol=1e-5)


def test_model_gets_float_batch_times_on_a_uniform_grid():
    seen = []
    S.flow_sample(lambda x, t, c: seen.append(t.clone()) or torch.zeros_like(x), torch.zeros(2, 1, 3, 3), 4)
    assert [s.tolist() for s in seen] == [[k / 4] * 2 for k in range(4)]
    seen.clear()
    S.flow_sample(lambda x, t, c: seen.append(t.clone()) or torch.zeros_like(x), torch.zeros(2, 1, 3, 3), 2,
                  method="heun")
    assert [s[0].item() for s in seen] == [0.0, 0.5, 0.5, 1.0]


def test_heun_is_more_accurate_than_euler_per_step():
    def std_error(method, steps):
        return abs(S.flow_sample(velocity_oracle, noise(), steps, method=method).std().item() - SD)
    assert std_error("heun", 5) < std_error("euler", 10) / 2
    assert abs(S.flow_sample(velocity_oracle, noise(), 5, method="heun").mean().item() - MU) < 0.02


def test_cfg_is_one_batched_call_and_matches_the_formula():
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        return toy_velocity(x, t, cond)

    x0 = torch.randn(2, 1, 4, 4)
    cond, uncond = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    ours = S.flow_sample(model, x0, 3, cond=cond, uncond=uncond, guidance_scale=5.0)
    assert calls == [4, 4, 4]
    x = x0
    for k in range(3):
        t = torch.full((2,), k / 3)
        u = toy_velocity(x, t, uncond.expand(2, 1))
        x = x + (u + 5.0 * (toy_velocity(x, t, cond.expand(2, 1)) - u)) / 3
    torch.testing.assert_close(ours, x)


def test_callback_and_bad_input():
    got = []
    x = S.flow_sample(toy_velocity, torch.zeros(1, 1, 2, 2), 3, callback=lambda i, t, x, x1: got.append((i, t, x1)))
    assert [(i, t) for i, t, _ in got] == [(0, 0.0), (1, 1 / 3), (2, 2 / 3)]
    assert got[0][2].shape == x.shape
    with pytest.raises(ValueError, match="method"):
        S.flow_sample(toy_velocity, x, 3, method="rk4")
    with pytest.raises(ValueError, match="channels"):
        S.flow_sample(lambda x, t, c: torch.cat([x, x], 1), x, 3)
