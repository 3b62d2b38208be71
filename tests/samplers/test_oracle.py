"""Exact oracles: for data ~ N(mu, s^2 I) the ideal noise and velocity predictors are closed-form,
so every sampler must return samples with mean mu and std s."""

import pytest
import torch
from diffusers import DDPMScheduler

import samplers as S
from samplers.schedules import alpha_bar

MU, SD, N = 0.4, 0.3, 4000


def eps_oracle(ab):
    """E[eps | x_t] = sqrt(1 - a)(x_t - sqrt(a) mu) / (a s^2 + 1 - a), a = ab[t]."""

    def model(x, t, cond=None):
        a = alpha_bar(ab, t, x)
        return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * SD**2 + 1 - a)

    return model


def velocity_oracle(x, t, cond=None):
    """E[x1 - x0 | x_t] for x_t = (1 - t) x0 + t x1, x0 ~ N(0, I), x1 ~ N(mu, s^2 I)."""
    t = t.view(-1, 1, 1, 1)
    return MU + (t * SD**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * SD**2) * (x - t * MU)


def noise(seed=0):
    return torch.randn(N, 1, 2, 2, generator=torch.Generator().manual_seed(seed))


def marginal(ab, t):
    """Exact samples of x_t. The course's T=300 linear schedule ends at ab = 0.048, not pure noise,
    so a deterministic sampler started from N(0, I) would carry that bias to the end."""
    return S.add_noise(MU + SD * noise(), t, ab, noise(5))


def assert_moments(x, tol=0.02):
    assert abs(x.mean().item() - MU) < tol, x.mean().item()
    assert abs(x.std().item() - SD) < tol, x.std().item()


LINEAR = S.linear_alphas_cumprod()
COSINE = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod


@pytest.mark.parametrize(
    "ab, timesteps, sampler",
    [
        (LINEAR, S.spaced_timesteps(300, 300), S.sample_ddpm),  # course B.2, the full chain
        (LINEAR, S.spaced_timesteps(300, 50), S.sample_ddpm),  # strided, sigma^2 = strided beta
        (COSINE, S.strided_timesteps(), S.sample_ddpm),  # the IF schedule of Part A
        (LINEAR, S.spaced_timesteps(300, 100), S.sample_ddim),  # deterministic, first order
        (COSINE, S.spaced_timesteps(1000, 50), S.sample_dpmpp_2m),  # second order, to clean
        (LINEAR, S.spaced_timesteps(300, 50), S.sample_dpmpp_2m),
    ],
)
def test_eps_samplers_reach_the_data_distribution(ab, timesteps, sampler):
    x = sampler(
        eps_oracle(ab),
        marginal(ab, timesteps[0]),
        S.Schedule.vp(ab, timesteps),
        generator=torch.Generator().manual_seed(1),
    )
    assert_moments(x)


@pytest.mark.parametrize("sampler, steps", [(S.sample_euler, 100), (S.sample_heun, 10)])
def test_flow_samplers_reach_the_data_distribution(sampler, steps):
    assert_moments(sampler(velocity_oracle, noise(), S.Schedule.flow(steps)))


def test_velocity_as_eps_is_the_ideal_noise_predictor():
    wrapped, ideal = S.VelocityAsEps(velocity_oracle, LINEAR), eps_oracle(LINEAR)
    x = noise()[:64] * 2
    for t in [0, 50, 299]:
        torch.testing.assert_close(wrapped(x, t), ideal(x, t), atol=1e-4, rtol=1e-4)
    t = torch.randint(0, 300, (64,))
    torch.testing.assert_close(wrapped(x, t), ideal(x, t), atol=1e-4, rtol=1e-4)
    x = S.sample_ddim(
        wrapped, marginal(LINEAR, 299), S.Schedule.vp(LINEAR, S.spaced_timesteps(300, 50))
    )
    assert_moments(x)


def test_one_step_denoise_is_the_posterior_mean():
    ab, t = LINEAR, 100
    x0 = MU + SD * noise(2)
    x_t = S.add_noise(x0, t, ab, generator=torch.Generator().manual_seed(3))
    est = S.one_step_denoise(eps_oracle(ab), x_t, t, ab)
    a = ab[t]
    post = MU + SD**2 * a.sqrt() / (a * SD**2 + 1 - a) * (x_t - a.sqrt() * MU)
    torch.testing.assert_close(est, post, atol=1e-4, rtol=1e-4)
    assert ((est - x0) ** 2).mean() < ((S.blur_denoise(x_t, 3, 1.0) - x0) ** 2).mean()
