"""The sampler table: one signature, schedules and slices, callback dicts, CFG batching through
Guided, seeds, dtypes, devices; flow samplers against diffusers after converting conventions."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

import samplers as S
from tests.samplers.test_oracle import MU, SD, noise, velocity_oracle

AB = S.linear_alphas_cumprod()
TS = S.spaced_timesteps(300, 10)
VP = S.Schedule.vp(AB, TS)


class ToyModel:
    """Per-sample, spatially non-trivial noise model(x, t, cond) with 2C outputs (noise +
    variance values); records (batch, t, cond batch) of every call."""

    def __init__(self, channels=3, variance=True):
        g = torch.Generator().manual_seed(0)
        self.w = (
            torch.randn(2 * channels if variance else channels, channels, 3, 3, generator=g) * 0.2
        )
        self.calls = []

    def __call__(self, x, t, cond=None):
        self.calls.append((x.shape[0], t, None if cond is None else cond.shape[0]))
        shift = 0.0 if cond is None else cond.view(-1, 1, 1, 1)
        return torch.tanh(F.conv2d(x, self.w, padding=1) + shift + t / 1000)


def toy_velocity(x, t, cond=None):
    shift = 0.0 if cond is None else cond.view(-1, 1, 1, 1)
    return torch.sin(3 * x) * (1 + t.view(-1, 1, 1, 1)) + shift


def test_the_table_has_one_signature():
    import inspect

    for spec in S.SAMPLER_TABLE:
        params = inspect.signature(spec.function).parameters
        assert list(params)[:5] == ["model", "x", "schedule", "generator", "callback"], spec
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[3:])
        assert spec.function is getattr(S, f"sample_{spec.name}") is S.get_sampler(spec.name)
    with pytest.raises(ValueError, match="unknown sampler 'rk4'; choose from ddpm, ddim, euler"):
        S.get_sampler("rk4")


def test_the_table_says_what_each_sampler_walks_and_costs():
    assert S.samplers_for("vp") == ("ddpm", "ddim", "dpmpp_2m")
    assert S.samplers_for("flow") == ("euler", "heun", "dpmpp_2m")
    assert [S.nfe(name, 10) for name in ("ddpm", "ddim", "euler", "heun", "dpmpp_2m")] == [
        10,
        10,
        10,
        20,
        10,
    ]
    assert S.sampler_spec("dpmpp_2m", "flow").kinds == ("vp", "flow")
    with pytest.raises(ValueError, match="'heun' walks flow schedules only; for a model that "):
        S.sampler_spec("heun", "vp")
    with pytest.raises(ValueError, match="unknown sampler 'rk4'; choose from euler, heun, dpmpp"):
        S.sampler_spec("rk4", "flow")
    with pytest.raises(ValueError, match="steps must be >= 0"):
        S.nfe("ddpm", -1)
    # with guidance a CFG pair counts 2; a student takes the scale as an input: one call a step
    assert S.samplers_for("flowmap") == ("flowmap",)
    assert [S.nfe(name, 4, guided=True) for name in ("heun", "euler", "flowmap")] == [16, 8, 4]
    assert S.nfe("flowmap", 4) == 4
    # the older names training uses: every function by name, and the flow-only samplers
    assert S.SAMPLERS == {spec.name: spec.function for spec in S.SAMPLER_TABLE}
    assert S.FLOW_SAMPLERS == ("euler", "heun")


def test_each_sampler_calls_the_model_as_often_as_the_table_says():
    ab, calls = S.linear_alphas_cumprod(), []

    def model(x, t, *s):  # a flow-map student also takes the end time s
        calls.append(t)
        return torch.zeros_like(x)

    schedules = {
        "flow": S.Schedule.flow(4),
        "flowmap": S.Schedule.flowmap([0, 0.25, 0.5, 0.75, 1]),
        "vp": S.Schedule.vp(ab, [299, 200, 100, 50, -1]),
    }
    for spec in S.SAMPLER_TABLE:
        for kind in spec.kinds:
            calls.clear()
            schedule = schedules[kind]
            spec.function(model, torch.zeros(1, 1, 2, 2), schedule)
            assert len(calls) == S.nfe(spec.name, len(schedule) - 1), (spec.name, kind)


def test_vp_model_gets_int_timesteps_and_callback_a_dict_per_step():
    model, seen = ToyModel(variance=False), []
    x = torch.randn(2, 3, 8, 8)
    out = S.sample_ddpm(S.Guided(model), x, VP[3:], callback=seen.append)
    assert out.shape == x.shape
    assert [c[1] for c in model.calls] == TS[3:-1] and all(
        isinstance(c[1], int) for c in model.calls
    )
    assert [s["i"] for s in seen] == list(range(len(TS) - 4)) and [s["t"] for s in seen] == TS[3:-1]
    assert torch.equal(seen[0]["x"], x)
    torch.testing.assert_close(
        seen[0]["denoised"], S.predict_denoised(x, model(x, TS[3]), TS[3], AB)
    )


def test_a_slice_is_a_schedule_that_starts_part_way():
    part = VP[4:]
    assert part.times == tuple(TS[4:]) and part.alphas_cumprod is AB and len(part) == len(TS) - 4
    with pytest.raises(TypeError, match="slice"):
        VP[3]
    with pytest.raises(ValueError, match="at least 2 timesteps"):
        S.sample_ddpm(S.Guided(ToyModel()), torch.randn(1, 3, 4, 4), VP[len(TS) - 1 :])


def test_samplers_refuse_the_other_kind_of_schedule():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="needs a VP schedule"):
        S.sample_ddim(S.Guided(ToyModel()), x, S.Schedule.flow(4))
    with pytest.raises(ValueError, match="needs a flow schedule"):
        S.sample_heun(toy_velocity, x, VP)
    with pytest.raises(ValueError, match="num_steps"):
        S.Schedule.flow(0)
    with pytest.raises(ValueError, match="timesteps \\[300\\] are outside -1..299"):
        S.Schedule.vp(AB, [300, 100, -1])


def test_cfg_one_batched_call_with_expanded_conditioning():
    model = ToyModel()
    x = torch.randn(3, 3, 8, 8)
    cond, uncond = torch.tensor([[0.5]]), torch.tensor([[0.0]])
    S.sample_ddpm(
        S.Guided(model, cond, uncond, 5.0), x, VP, generator=torch.Generator().manual_seed(0)
    )
    assert [c[0] for c in model.calls] == [6] * (len(TS) - 1) and {c[2] for c in model.calls} == {6}
    model.calls.clear()
    S.sample_ddpm(S.Guided(model, cond), x, VP)  # conditional only: cond expanded to B
    assert {c[:3:2] for c in model.calls} == {(3, 3)}


def test_guidance_scale_zero_is_unconditional_and_one_skips_the_unconditional_half():
    x = torch.randn(2, 3, 8, 8)
    cond, uncond = torch.tensor([[0.3]]), torch.tensor([[-0.4]])

    def run(model):
        return S.sample_ddpm(model, x, VP, generator=torch.Generator().manual_seed(2))

    model = ToyModel(
        variance=False
    )  # with variance channels, scale 0 keeps the conditional variance
    torch.testing.assert_close(
        run(S.Guided(model, cond, uncond, 0.0)), run(S.Guided(model, uncond))
    )
    model = ToyModel()
    torch.testing.assert_close(run(S.Guided(model, cond, uncond, 1.0)), run(S.Guided(model, cond)))
    assert {c[0] for c in model.calls} == {2}  # no doubled batch at scale 1
    assert not torch.allclose(run(S.Guided(model, cond, uncond, 3.0)), run(S.Guided(model, cond)))


def test_ddim_is_deterministic_and_ddpm_is_seeded():
    x, model = torch.randn(2, 3, 8, 8), S.Guided(ToyModel())

    def g(seed):
        return torch.Generator().manual_seed(seed)

    a = S.sample_ddim(model, x, VP, generator=g(0))
    torch.testing.assert_close(a, S.sample_ddim(model, x, VP, generator=g(1)))
    c, d, e = (S.sample_ddpm(model, x, VP, generator=g(s)) for s in (0, 0, 1))
    assert torch.equal(c, d) and not torch.allclose(c, e)
    assert not torch.allclose(a, S.sample_ddim(model, x, VP, generator=g(0), eta=1.0))


def test_ddpm_samples_depend_on_the_batch_they_are_drawn_in():
    """Documented in LabModel.sample: one generator feeds the whole batch, so the same seed gives
    the same images only at the same batch size."""
    model = S.Guided(ToyModel())
    x = torch.randn(4, 3, 8, 8)
    whole = S.sample_ddpm(model, x, VP, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    halves = torch.cat(
        [S.sample_ddpm(model, x[:2], VP, generator=g), S.sample_ddpm(model, x[2:], VP, generator=g)]
    )
    assert not torch.allclose(whole, halves)
    again = S.sample_ddpm(model, x, VP, generator=torch.Generator().manual_seed(0))
    assert torch.equal(whole, again)


def test_rising_pairs_renoise_without_calling_the_model():
    model, seen = ToyModel(), []
    schedule = S.Schedule.vp(AB, [200, 100, 200, 100, -1])
    S.sample_ddpm(
        S.Guided(model),
        torch.randn(1, 3, 4, 4),
        schedule,
        callback=lambda step: seen.append(step["i"]),
        project=lambda x, t: seen.append(("project", t)) or x,
    )
    assert [c[1] for c in model.calls] == [200, 200, 100]
    assert seen == [0, ("project", 100), 2, ("project", 100), 3, ("project", -1)]


def test_bad_model_outputs_are_clear():
    x = torch.randn(3, 3, 4, 4)
    with pytest.raises(ValueError, match="expected \\(3, 3 or 6, 4, 4\\)"):
        S.sample_ddpm(lambda x, t: x[:, :1], x, S.Schedule.vp(AB, [10, 5, -1]))
    with pytest.raises(ValueError, match="classifier-free guidance needs `cond`"):
        S.sample_ddpm(
            S.Guided(lambda x, t, c: x, None, torch.zeros(1, 1), 3.0),
            x,
            S.Schedule.vp(AB, [10, -1]),
        )
    with pytest.raises(ValueError, match="conditioning has batch 2"):
        S.sample_ddpm(
            S.Guided(lambda x, t, c: x, torch.zeros(2, 1)), x, S.Schedule.vp(AB, [10, -1])
        )
    with pytest.raises(ValueError, match="expected \\(1, 1, 2, 2\\)"):
        S.sample_euler(
            lambda x, t: torch.cat([x, x], 1), torch.zeros(1, 1, 2, 2), S.Schedule.flow(3)
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_is_kept(dtype):
    model = ToyModel()
    model.w = model.w.to(dtype)
    out = S.sample_ddpm(
        S.Guided(model),
        torch.randn(1, 3, 8, 8, dtype=dtype),
        VP,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.dtype == dtype and torch.isfinite(out.float()).all()


def test_no_tensor_is_pinned_to_the_cpu():
    """The meta device stands in for cuda/mps: mixing in a CPU tensor would raise."""
    meta = torch.device("meta")
    model, cond = ToyModel(), torch.zeros(1, 1, device=meta)
    model.w = model.w.to(meta)
    x, g = torch.randn(2, 3, 16, 16, device=meta), torch.Generator().manual_seed(0)
    assert S.sample_ddpm(S.Guided(model, cond, cond, 3.0), x, VP, generator=g).is_meta
    assert S.sample_ddpm(
        S.anagram_noise(model, [cond] * 2, ["flip", "patch_permute"]), x, VP[-3:], generator=g
    ).is_meta
    assert S.sample_ddpm(S.hybrid_noise(model, cond, cond), x, VP[-3:], generator=g).is_meta
    velocity = lambda x, t: x * t.view(-1, 1, 1, 1)  # noqa: E731
    assert S.sample_heun(velocity, x, S.Schedule.flow(2)).is_meta
    assert S.sample_ddim(S.VelocityAsEps(velocity, AB), x, VP[-3:]).is_meta


# ----------------------------------------------------------------------------- flow samplers
def test_euler_equals_diffusers_flow_match_euler():
    """diffusers: sigma = 1 is noise, model output = noise - data. Ours: t = 1 - sigma, v =
    -output."""
    n = 12
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(sigmas=[1 - k / n for k in range(n)])
    noise0 = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    x = noise0
    for i, timestep in enumerate(sched.timesteps):
        sigma = sched.sigmas[i]
        out = -toy_velocity(x, (1 - sigma).expand(x.shape[0]))
        x = sched.step(out, timestep, x).prev_sample
    torch.testing.assert_close(
        S.sample_euler(toy_velocity, noise0, S.Schedule.flow(n)), x, atol=1e-5, rtol=1e-5
    )


def test_flow_model_gets_float_batch_times_on_a_uniform_grid():
    seen = []

    def model(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    S.sample_euler(model, torch.zeros(2, 1, 3, 3), S.Schedule.flow(4))
    assert [s.tolist() for s in seen] == [[k / 4] * 2 for k in range(4)]
    seen.clear()
    S.sample_heun(model, torch.zeros(2, 1, 3, 3), S.Schedule.flow(2))
    assert [s[0].item() for s in seen] == [0.0, 0.5, 0.5, 1.0]


def test_heun_is_more_accurate_than_euler_per_step():
    def std_error(sampler, steps):
        return abs(sampler(velocity_oracle, noise(), S.Schedule.flow(steps)).std().item() - SD)

    assert std_error(S.sample_heun, 5) < std_error(S.sample_euler, 10) / 2
    assert (
        abs(S.sample_heun(velocity_oracle, noise(), S.Schedule.flow(5)).mean().item() - MU) < 0.02
    )


def test_flow_cfg_is_one_batched_call_and_matches_the_formula():
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        return toy_velocity(x, t, cond)

    start = torch.randn(2, 1, 4, 4)
    cond, uncond = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    ours = S.sample_euler(S.Guided(model, cond, uncond, 5.0), start, S.Schedule.flow(3))
    assert calls == [4, 4, 4]
    x = start
    for k in range(3):
        t = torch.full((2,), k / 3)
        u = toy_velocity(x, t, uncond.expand(2, 1))
        x = x + (u + 5.0 * (toy_velocity(x, t, cond.expand(2, 1)) - u)) / 3
    torch.testing.assert_close(ours, x)


def test_flow_callback_gets_the_data_estimate():
    got = []
    x = torch.zeros(1, 1, 2, 2)
    S.sample_euler(toy_velocity, x, S.Schedule.flow(3), callback=got.append)
    assert [(s["i"], s["t"]) for s in got] == [(0, 0.0), (1, 1 / 3), (2, 2 / 3)]
    torch.testing.assert_close(got[0]["denoised"], x + toy_velocity(x, torch.zeros(1)))
