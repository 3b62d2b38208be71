"""The course UNet family: parameter counts (docs/course.md 3.3), shapes, conditioning semantics."""

import pytest
import torch

from training.models import ARCHS, CONDITIONINGS, ImprovedUNet, UNet, build_model, count_parameters

COUNTS = {  # docs/course.md 3.3, biases and BN affine included
    (64, "none"): 1_975_361,
    (64, "time-add"): 1_996_417,
    (64, "time-mul"): 1_996_417,
    (64, "class"): 2_019_201,
    (128, "none"): 7_891_073,
    (128, "time-add"): 7_974_145,
    (128, "time-mul"): 7_974_145,
    (128, "class"): 8_060_673,
}


def _inputs(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 28, 28, generator=g)
    t = torch.rand(b, generator=g)
    c = torch.nn.functional.one_hot(torch.arange(b) % 10, 10).float()
    return x, t, c


@pytest.mark.parametrize("hidden,conditioning", list(COUNTS))
def test_course_parameter_counts(hidden, conditioning):
    assert (
        count_parameters(UNet(hidden=hidden, conditioning=conditioning))
        == COUNTS[hidden, conditioning]
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_forward_shapes_and_backward(arch, conditioning):
    torch.manual_seed(0)
    model = build_model(arch, hidden=16, conditioning=conditioning)
    x, t, c = _inputs()
    y = model(x, t, c if conditioning == "class" else None)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_time_shapes_equivalent(arch):
    torch.manual_seed(0)
    model = build_model(arch, hidden=16, conditioning="time-add").eval()
    x, t, _ = _inputs()
    ref = model(x, t)
    torch.testing.assert_close(model(x, t[:, None]), ref)
    torch.testing.assert_close(model(x, torch.full((4,), 0.3)), model(x, 0.3))


@pytest.mark.parametrize("arch", ARCHS)
def test_time_conditioning_matters(arch):
    torch.manual_seed(0)
    model = build_model(
        arch, hidden=16, conditioning="time-mul"
    ).train()  # batch-stat BN: effects visible at init
    x, t, _ = _inputs()
    assert not torch.allclose(model(x, t), model(x, 1 - t), atol=1e-3)
    with pytest.raises(ValueError, match="time-conditioned"):
        model(x)


def test_time_add_and_time_mul_differ():
    """Same weights, different modulation: the outputs must differ."""
    torch.manual_seed(0)
    add = UNet(hidden=16, conditioning="time-add").eval()
    mul = UNet(hidden=16, conditioning="time-mul").eval()
    mul.load_state_dict(add.state_dict())
    x, t, _ = _inputs()
    assert not torch.allclose(add(x, t), mul(x, t), atol=1e-4)


@pytest.mark.parametrize("conditioning", ["time-add", "time-mul", "class"])
def test_course_bottleneck_modulation(conditioning):
    """u0 (the Unflatten output) reaches UpBlock u1 modulated exactly as docs/course.md 3.4 says."""
    torch.manual_seed(0)
    m = UNet(hidden=8, conditioning=conditioning).eval()
    seen = {}
    m.unflatten.register_forward_hook(lambda mod, inp, out: seen.update(u0=out))
    m.u1.register_forward_pre_hook(lambda mod, inp: seen.update(cat=inp[0]))
    x, t, c = _inputs()
    m(x, t, c if conditioning == "class" else None)
    u0, got = seen["u0"], seen["cat"][:, 16:]
    t1 = m.fc1_t(t[:, None])[:, :, None, None]
    if conditioning == "time-add":
        expected = u0 + t1
    elif conditioning == "time-mul":
        expected = u0 * t1
    else:
        expected = m.fc1_c(c)[:, :, None, None] * u0 + t1
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_class_null_is_zero_vector(arch):
    torch.manual_seed(0)
    model = build_model(arch, hidden=16, conditioning="class").train()
    x, t, c = _inputs()
    null = torch.zeros_like(c)
    torch.testing.assert_close(model(x, t, None), model(x, t, null))
    assert not torch.allclose(model(x, t, c), model(x, t, null), atol=1e-3)
    assert not torch.allclose(model(x, t, c), model(x, t, torch.roll(c, 1, dims=1)), atol=1e-3)
    with pytest.raises(ValueError, match="one-hot"):
        model(x, t, c[:, :5])


def test_unknown_options_raise():
    with pytest.raises(ValueError, match="conditioning"):
        UNet(conditioning="text")
    with pytest.raises(ValueError, match="arch"):
        build_model("resnet")
    with pytest.raises(ValueError, match=r"\(--hidden\) divisible by 8"):
        ImprovedUNet(hidden=12)


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_matches(arch):
    torch.manual_seed(0)
    model = build_model(arch, hidden=16, conditioning="class").eval()
    x, t, c = _inputs()
    ref = model(x, t, c)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.to(memory_format=torch.channels_last), t, c)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_point_expand_is_the_transposed_convolution(channels_last):
    """PointExpand's matrix product gives ConvTranspose2d(k, stride k)'s values and gradients on a
    1x1 map, its output in the weight's memory format; other sizes take the convolution itself."""
    from training.models import PointExpand

    torch.manual_seed(0)
    layer = PointExpand(6, 5, 7)
    conv = torch.nn.ConvTranspose2d(6, 5, 7, 7, 0)
    conv.load_state_dict(layer.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    layer, conv = layer.to(memory_format=fmt), conv.to(memory_format=fmt)
    x = torch.randn(3, 6, 1, 1, requires_grad=True)
    y, ref = layer(x), conv(x)
    torch.testing.assert_close(y, ref)
    assert y.is_contiguous(memory_format=fmt) and y.shape == (3, 5, 7, 7)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(y, (x, layer.weight, layer.bias), g)
    for got, want in zip(
        grads, torch.autograd.grad(ref, (x, conv.weight, conv.bias), g), strict=False
    ):
        torch.testing.assert_close(got, want)
    wide = torch.randn(2, 6, 2, 3)
    torch.testing.assert_close(layer(wide), conv(wide))


def test_gelu_on_channels_last_keeps_values_and_layout():
    from training.models import GELU

    x = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    y = GELU()(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    torch.testing.assert_close(y, torch.nn.functional.gelu(x))
    g = torch.randn_like(y)
    torch.testing.assert_close(
        torch.autograd.grad(y, x, g)[0], torch.autograd.grad(torch.nn.functional.gelu(x), x, g)[0]
    )


def test_improved_is_bigger_but_reasonable():
    n = count_parameters(ImprovedUNet(hidden=64, conditioning="class"))
    assert 2_019_201 < n < 10_000_000


@pytest.mark.parametrize("conditioning", ["none", "time-mul", "class"])
def test_fold_batchnorm_is_the_same_function(conditioning):
    from training.models import fold_batchnorm

    torch.manual_seed(0)
    model = UNet(hidden=8, conditioning=conditioning)
    model.train()
    for _ in range(3):  # non-trivial running statistics
        model(torch.randn(16, 1, 28, 28), torch.rand(16), torch.eye(10)[torch.arange(16) % 10])
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy
    x, t, c = torch.randn(4, 1, 28, 28), torch.rand(4), torch.eye(10)[:4]
    with torch.no_grad():
        torch.testing.assert_close(folded(x, t, c), model(x, t, c), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_embeddings_tell_apart_timesteps_that_bf16_merges(arch):
    """Under bf16 autocast the time embedding still runs in fp32: two DDPM timesteps (i + 1) / 300
    that round to the same bf16 number give different outputs (in bf16 they would be identical)."""
    steps = torch.arange(1, 301) / 300
    rounded = steps.bfloat16().float()
    i = int(torch.nonzero(rounded[1:] == rounded[:-1])[0])
    torch.manual_seed(0)
    model = build_model(arch, hidden=16, conditioning="class").eval()
    x, _, c = _inputs(b=2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = (model(x, steps[j].expand(2), c) for j in (i, i + 1))
        merged = (model(x, rounded[j].expand(2), c) for j in (i, i + 1))
        assert torch.equal(*merged)
    assert a.dtype == torch.bfloat16 and not torch.equal(a, b)
