"""The flow-map sampler against the exact Gaussian oracle: for data ~ N(MU, SD^2) the flow ODE's
map from time t to s is affine in closed form, so one jump lands exactly where the ODE does."""

import pytest
import torch

import samplers as S
from tests.samplers.test_oracle import MU, SD, velocity_oracle


def sigma(t):
    """The std of the flow state x_t = (1 - t) noise + t data around its mean t MU."""
    return ((1 - t) ** 2 + t**2 * SD**2).sqrt()


def flow_map_oracle(x, t, s):
    """The exact average velocity (x_s - x_t) / (s - t) of the ODE's map x_s = s MU + sigma(s) /
    sigma(t) (x_t - t MU); on the diagonal s = t, the velocity itself."""
    t, s = t.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)
    x_s = s * MU + sigma(s) / sigma(t) * (x - t * MU)
    gap = s - t
    return torch.where(gap > 0, (x_s - x) / gap.clamp(min=1e-12), velocity_oracle(x, t.flatten()))


def noise():
    return torch.randn(
        256, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )


@pytest.mark.parametrize("times", [[0, 1], [0, 0.5, 1], [0, 0.1, 0.3, 0.7, 1]])
def test_flowmap_lands_on_the_odes_solution_in_any_number_of_steps(times):
    z = noise()
    out = S.sample_flowmap(flow_map_oracle, z, S.Schedule.flowmap(times))
    assert (out - (MU + SD * z)).abs().max().item() < 1e-12


def test_flowmap_from_part_way_lands_where_the_ode_does():
    """A student's DDPM grid starts above 0: the jump from x_t at t to 1 is the ODE's."""
    z, t = noise(), 0.25
    x_t = t * MU + sigma(torch.tensor(t, dtype=torch.float64)) * z
    out = S.sample_flowmap(flow_map_oracle, x_t, S.Schedule.flowmap([t, 0.6, 1]))
    assert (out - (MU + SD * z)).abs().max().item() < 1e-12


def test_flowmap_calls_once_a_step_and_streams_each_step():
    seen, calls = [], []

    def model(x, t, s):
        calls.append((t[0].item(), s[0].item()))
        return flow_map_oracle(x, t, s)

    z = noise()
    S.sample_flowmap(model, z, S.Schedule.flowmap([0, 0.5, 1]), callback=seen.append)
    assert calls == [(0.0, 0.5), (0.5, 1.0)]
    assert [s["t"] for s in seen] == [0, 0.5] and torch.equal(seen[0]["x"], z)


def test_guided_student_passes_the_scale_and_no_pair():
    calls = []

    def student(x, t, s, cond, w):
        calls.append((x.shape[0], cond.shape, w.tolist()))
        return torch.zeros_like(x)

    model = S.GuidedStudent(student, torch.ones(1, 10), guidance_scale=5.0)
    S.sample_flowmap(model, torch.zeros(3, 1, 2, 2), S.Schedule.flowmap([0, 1]))
    assert calls == [(3, (3, 10), [5.0, 5.0, 5.0])]


def test_flowmap_walks_only_flowmap_schedules():
    with pytest.raises(ValueError, match="a flow-map schedule: Schedule.flowmap"):
        S.sample_flowmap(flow_map_oracle, noise(), S.Schedule.flow(2))
    with pytest.raises(ValueError, match="sampler 'heun' walks flow schedules only"):
        S.sampler_spec("heun", "flowmap")
    with pytest.raises(ValueError, match="rise strictly within"):
        S.Schedule.flowmap([0, 0.5, 0.5, 1])
    assert S.Schedule.flowmap([0, 0.5, 1])[1:].kind == "flowmap"
