"""iterative_denoise: call protocol, i_start, callback, CFG batching, step options, dtypes."""
import pytest
import torch
import torch.nn.functional as F

import samplers as S

AB = S.linear_alphas_cumprod()
TS = S.spaced_timesteps(300, 10)


class ToyModel:
    """Per-sample, spatially non-trivial noise model with 2C outputs (noise + variance values)."""

    def __init__(self, channels=3, variance=True):
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(2 * channels if variance else channels, channels, 3, 3, generator=g) * 0.2
        self.calls = []

    def __call__(self, x, t, cond):
        self.calls.append((x.shape[0], t, None if cond is None else cond.shape[0]))
        shift = 0.0 if cond is None else cond.view(-1, 1, 1, 1)
        return torch.tanh(F.conv2d(x, self.w, padding=1) + shift + t / 1000)


def test_model_gets_int_timesteps_and_callback_sees_every_step():
    model, seen = ToyModel(variance=False), []
    x = torch.randn(2, 3, 8, 8)
    out = S.iterative_denoise(model, x, TS, AB, i_start=3, callback=lambda *a: seen.append(a))
    assert out.shape == x.shape
    assert [c[1] for c in model.calls] == TS[3:-1] and all(isinstance(c[1], int) for c in model.calls)
    assert [s[0] for s in seen] == list(range(3, len(TS) - 1)) and [s[1] for s in seen] == TS[3:-1]
    assert torch.equal(seen[0][2], x) and seen[0][3].shape == x.shape


@pytest.mark.parametrize("i_start", [-1, len(TS) - 1, 50])
def test_i_start_out_of_range(i_start):
    with pytest.raises(ValueError, match="i_start"):
        S.iterative_denoise(ToyModel(), torch.randn(1, 3, 4, 4), TS, AB, i_start=i_start)


def test_cfg_one_batched_call_with_expanded_conditioning():
    model = ToyModel()
    x = torch.randn(3, 3, 8, 8)
    cond, uncond = torch.tensor([[0.5]]), torch.tensor([[0.0]])
    S.iterative_denoise(model, x, TS, AB, cond=cond, uncond=uncond, guidance_scale=5.0,
                        generator=torch.Generator().manual_seed(0))
    assert [c[0] for c in model.calls] == [6] * (len(TS) - 1) and {c[2] for c in model.calls} == {6}
    model.calls.clear()
    S.iterative_denoise(model, x, TS, AB, cond=cond)  # conditional only: cond expanded to B
    assert {c[:3:2] for c in model.calls} == {(3, 3)}


def test_cfg_scale_one_equals_conditional_sampling():
    x, cond = torch.randn(2, 3, 8, 8), torch.tensor([[0.3]])

    def run(**kw):
        return S.iterative_denoise(ToyModel(), x, TS, AB, cond=cond, generator=torch.Generator().manual_seed(2), **kw)

    torch.testing.assert_close(run(uncond=torch.zeros(1, 1), guidance_scale=1.0), run())


def test_ddim_is_deterministic_and_ddpm_is_seeded():
    x, model = torch.randn(2, 3, 8, 8), ToyModel()
    a = S.iterative_denoise(model, x, TS, AB, step="ddim", generator=torch.Generator().manual_seed(0))
    b = S.iterative_denoise(model, x, TS, AB, step="ddim", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    c = S.iterative_denoise(model, x, TS, AB, generator=torch.Generator().manual_seed(0))
    d = S.iterative_denoise(model, x, TS, AB, generator=torch.Generator().manual_seed(0))
    e = S.iterative_denoise(model, x, TS, AB, generator=torch.Generator().manual_seed(1))
    assert torch.equal(c, d) and not torch.allclose(c, e)
    f = S.iterative_denoise(model, x, TS, AB, step="ddim", eta=1.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, f)


def test_rising_pairs_renoise_without_calling_the_model():
    model, seen = ToyModel(), []
    ts = [200, 100, 200, 100, -1]
    S.iterative_denoise(model, torch.randn(1, 3, 4, 4), ts, AB, callback=lambda i, *a: seen.append(i),
                        project=lambda x, t: seen.append(("project", t)) or x)
    assert [c[1] for c in model.calls] == [200, 200, 100]
    assert seen == [0, ("project", 100), 2, ("project", 100), 3, ("project", -1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_is_kept(dtype):
    model = ToyModel()
    model.w = model.w.to(dtype)
    out = S.iterative_denoise(model, torch.randn(1, 3, 8, 8, dtype=dtype), TS, AB,
                              generator=torch.Generator().manual_seed(0))
    assert out.dtype == dtype and torch.isfinite(out.float()).all()


def test_no_tensor_is_pinned_to_the_cpu():
    """The meta device stands in for cuda/mps: mixing in a CPU tensor would raise."""
    meta = torch.device("meta")
    model, cond = ToyModel(), torch.zeros(1, 1, device=meta)
    model.w = model.w.to(meta)
    x, g = torch.randn(2, 3, 16, 16, device=meta), torch.Generator().manual_seed(0)
    assert S.iterative_denoise(model, x, TS, AB, cond=cond, uncond=cond, guidance_scale=3.0, generator=g).is_meta
    assert S.visual_anagram(model, x, TS[-3:], AB, conds=[cond] * 2, views=["flip", "patch_permute"],
                            generator=g).is_meta
    assert S.hybrid_image(model, x, TS[-3:], AB, cond_far=cond, cond_near=cond, generator=g).is_meta
    velocity = lambda x, t, c: x * t.view(-1, 1, 1, 1)  # noqa: E731
    assert S.flow_sample(velocity, x, 2, method="heun").is_meta
    assert S.iterative_denoise(S.VelocityAsEps(velocity, AB), x, TS[-3:], AB, step="ddim").is_meta
