"""The faster solvers: DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler on VP
schedules, the shifted flow grid against diffusers' FlowMatchEulerDiscreteScheduler, and the flow
solvers against the exact Gaussian oracle (the ODE's solution in closed form)."""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

import samplers as S
from samplers.schedules import alpha_bar
from tests.samplers.test_oracle import MU, SD, velocity_oracle

COSINE = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod


class NearOracle:
    """A noise model that denoises like a real one: the exact noise of data ~ N(MU, SD^2), plus a
    per-pixel, spatially mixing, t-dependent perturbation 0.1 tanh(0.2 conv(x) + t / 1000); with
    `variance`, 3 more channels of variance values in [-1, 1], as DeepFloyd IF returns."""

    def __init__(self, alphas_cumprod, variance=False):
        g = torch.Generator().manual_seed(0)
        self.ab, self.w = alphas_cumprod, torch.randn(6 if variance else 3, 3, 3, 3, generator=g)
        self.calls = []

    def __call__(self, x, t):
        self.calls.append(t)
        a = alpha_bar(self.ab, t, x)
        eps = (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * SD**2 + 1 - a)
        out = torch.tanh(0.2 * F.conv2d(x, self.w, padding=1) + t / 1000)
        return torch.cat([eps + 0.1 * out[:, :3], out[:, 3:]], dim=1)


def diffusers_dpmpp_2m(betas, timesteps, variance):
    """DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2) set to walk
    exactly our VP `timesteps` on the noise schedule `betas` (beta_schedule options):

    - `set_timesteps(timesteps=...)`: our times but the last, which diffusers takes from
      `final_sigmas_type`: "zero" for a schedule ending at -1 (clean; diffusers then takes a
      first-order step there, as ours does, since lambda = +inf leaves r = 0), "sigma_min" for one
      ending at 0 (sigma of t = 0);
    - `lower_order_final=False` (and `euler_at_final=False`, the default): diffusers would
      otherwise take the last step of a schedule under 15 steps at first order although it ends
      at t = 0, where ours is second order;
    - `variance_type="learned_range"` for 6-channel outputs: diffusers then keeps the first 3.
    No thresholding or clipping (the defaults).
    """
    sched = DPMSolverMultistepScheduler(
        **betas,
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="zero" if timesteps[-1] == -1 else "sigma_min",
        lower_order_final=False,
        variance_type="learned_range" if variance else None,
    )
    sched.set_timesteps(timesteps=timesteps[:-1])
    assert sched.timesteps.tolist() == timesteps[:-1]
    return sched


LINEAR_300 = dict(num_train_timesteps=300, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
LINEAR_1000 = dict(num_train_timesteps=1000, beta_schedule="linear")  # 1e-4 to 0.02
COSINE_1000 = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")  # IF's
PEER_SCHEDULES = {
    # the course's MNIST schedule, 10 spaced steps to clean
    "linear-300": (LINEAR_300, S.spaced_timesteps(300, 10)),
    # diffusers' default linear schedule, 10 spaced steps, and the course's strided list to 0
    "linear-1000": (LINEAR_1000, S.spaced_timesteps(1000, 10)),
    "linear-1000-strided": (LINEAR_1000, S.strided_timesteps()),
    # IF's cosine schedule from t <= 900 (at t = 999, alpha = 5e-5 and float32 gives out)
    "cosine-spaced": (COSINE_1000, [900, 800, 700, 600, 500, 400, 300, 200, 100, -1]),
    "cosine-strided": (COSINE_1000, S.strided_timesteps(900, 30)),
}


@pytest.mark.parametrize("variance", [False, True], ids=["3-channel", "6-channel"])
@pytest.mark.parametrize("name", list(PEER_SCHEDULES))
def test_dpmpp_2m_equals_diffusers_on_vp_schedules(name, variance):
    betas, timesteps = PEER_SCHEDULES[name]
    sched = diffusers_dpmpp_2m(betas, timesteps, variance)
    ab = sched.alphas_cumprod
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model = NearOracle(ab, variance)
    theirs = x
    for t in sched.timesteps:
        theirs = sched.step(model(theirs, int(t)), t, theirs).prev_sample
    assert model.calls == timesteps[:-1]
    model.calls.clear()
    ours = S.sample_dpmpp_2m(model, x, S.Schedule.vp(ab, timesteps))
    assert model.calls == timesteps[:-1]
    assert (ours - theirs).abs().max() < 1e-4
    assert theirs.abs().max() < 3  # a denoised image, not an overflow that hides the error


def test_dpmpp_2m_ignores_the_variance_half():
    ab, timesteps = COSINE, PEER_SCHEDULES["cosine-strided"][1]
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    six = NearOracle(ab, variance=True)

    def noise_only(x, t):
        return six(x, t)[:, :3]

    schedule = S.Schedule.vp(ab, timesteps)
    assert torch.equal(
        S.sample_dpmpp_2m(six, x, schedule), S.sample_dpmpp_2m(noise_only, x, schedule)
    )


def test_dpmpp_2m_callback_once_per_model_call():
    ab, timesteps = S.linear_alphas_cumprod(), PEER_SCHEDULES["linear-300"][1]
    model, seen = NearOracle(ab), []
    x = torch.randn(1, 3, 4, 4)
    S.sample_dpmpp_2m(model, x, S.Schedule.vp(ab, timesteps), callback=seen.append)
    assert [(s["i"], s["t"]) for s in seen] == list(enumerate(timesteps[:-1]))
    assert torch.equal(seen[0]["x"], x)
    eps = model(x, timesteps[0])
    torch.testing.assert_close(seen[0]["denoised"], S.predict_denoised(x, eps, timesteps[0], ab))
    seen.clear()
    S.sample_dpmpp_2m(velocity_oracle, x, S.Schedule.flow(3, shift=2.0), callback=seen.append)
    assert [s["t"] for s in seen] == list(S.Schedule.flow(3, shift=2.0).times[:-1])
    torch.testing.assert_close(seen[0]["denoised"], x + velocity_oracle(x, torch.zeros(1)))


def test_dpmpp_2m_refuses_schedules_it_cannot_walk():
    ab = S.linear_alphas_cumprod()
    with pytest.raises(ValueError, match="times that fall toward data"):
        S.sample_dpmpp_2m(
            NearOracle(ab), torch.zeros(1, 3, 4, 4), S.Schedule.vp(ab, [200, 100, 200, -1])
        )
    with pytest.raises(ValueError, match="times that rise toward data"):
        S.sample_dpmpp_2m(
            velocity_oracle, torch.zeros(1, 1, 2, 2), S.Schedule((0.0, 0.5, 0.5, 1.0))
        )
    with pytest.raises(ValueError, match="at least 2 times"):
        S.sample_dpmpp_2m(velocity_oracle, torch.zeros(1, 1, 2, 2), S.Schedule.flow(2)[2:])
    with pytest.raises(ValueError, match="expected \\(1, 1, 2, 2\\)"):  # a noise + variance output
        S.sample_dpmpp_2m(
            lambda x, t: torch.cat([x, x], 1), torch.zeros(1, 1, 2, 2), S.Schedule.flow(2)
        )


def test_dpmpp_2m_keeps_dtype_and_device():
    meta = torch.device("meta")
    ab = S.linear_alphas_cumprod()
    x = torch.randn(2, 3, 8, 8, device=meta)
    assert S.sample_dpmpp_2m(lambda x, t: x, x, S.Schedule.vp(ab, [299, 150, 0, -1])).is_meta
    assert S.sample_dpmpp_2m(lambda x, t: x * t.view(-1, 1, 1, 1), x, S.Schedule.flow(3)).is_meta
    half = torch.randn(1, 1, 4, 4, dtype=torch.bfloat16)
    assert S.sample_dpmpp_2m(velocity_oracle, half, S.Schedule.flow(4)).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- the flow grid
@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_flow_shift_equals_diffusers(shift):
    """diffusers shifts sigma (1 = noise) as shift s / (1 + (shift - 1) s); ours is t = 1 - s."""
    n = 10
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(sigmas=[1 - k / n for k in range(n)])
    ours = torch.tensor(S.Schedule.flow(n, shift).times, dtype=torch.float32)
    torch.testing.assert_close(ours, 1 - sched.sigmas, atol=1e-6, rtol=0)


def test_flow_shift_spends_steps_near_noise_and_keeps_the_ends():
    times = S.Schedule.flow(8, shift=3.0).times
    assert times[0] == 0.0 and times[-1] == 1.0 and list(times) == sorted(times)
    assert times[4] < 0.5 < S.Schedule.flow(8, shift=0.5).times[4]
    # the signal-to-noise odds t / (1 - t) of the uniform grid, divided by the shift
    assert times[4] / (1 - times[4]) == pytest.approx((0.5 / 0.5) / 3.0)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="shift must be a finite number > 0"):
            S.Schedule.flow(8, shift=bad)


# ----------------------------------------------------------------------------- Gaussian oracle
def flow_error(sampler, steps, shift):
    """Largest error of `sampler` on the flow ODE of data ~ N(MU, SD^2) against its exact
    solution: noise z goes to MU + SD z. In float64, so the error is the method's."""
    z = torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sampler(velocity_oracle, z, S.Schedule.flow(steps, shift))
    return (out - (MU + SD * z)).abs().max().item()


def order(sampler, shift, steps=(512, 2048)):
    """The observed order of convergence: log2 of the error's fall per doubling of the steps."""
    first, last = (flow_error(sampler, n, shift) for n in steps)
    return math.log2(first / last) / math.log2(steps[1] / steps[0])


@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_flow_solvers_converge_at_their_order_on_uniform_and_shifted_grids(shift):
    """Euler is first order, Heun second. DPM-Solver++(2M) is second order up to a log factor:
    lambda = log(t / (1 - t)) is infinite at both ends of [0, 1], where the steps of a t-grid do
    not shrink in lambda, so n^2 x error grows like log n (observed orders 1.7-1.85 from 512 to
    2048 steps, rising with n)."""
    assert 0.95 < order(S.sample_euler, shift) < 1.05
    assert order(S.sample_heun, shift) > 1.95
    assert order(S.sample_dpmpp_2m, shift) > 1.65
    assert flow_error(S.sample_dpmpp_2m, 2048, shift) < 1e-4


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_dpmpp_2m_beats_euler_at_the_same_cost(shift):
    """One model call a step each; by 32 steps the second-order solver is 4-6x closer. (Heun, at
    two calls a step, is closer than both at equal calls on this oracle: the first-order last
    step into clean data limits DPM-Solver++.)"""
    errors = {
        n: (flow_error(S.sample_dpmpp_2m, n, shift), flow_error(S.sample_euler, n, shift))
        for n in (8, 16, 32)
    }
    assert all(dpmpp < euler for dpmpp, euler in errors.values())
    assert errors[32][0] < errors[32][1] / 3
