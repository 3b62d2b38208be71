"""Objectives of Part B: each loss against its closed form (tiny fake models, fixed noise)."""

import pytest
import torch

from training.config import make_options
from training.objectives import (
    ddpm_loss,
    ddpm_loss_weights,
    denoiser_loss,
    drop_classes,
    flow_loss,
    loss_by_t_bins,
    make_objective,
    pure_noise_loss,
)


def _data(b=6, lo=-1.0):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 1, 28, 28, generator=g) * (1 - lo) + lo
    return x, torch.randn(x.shape, generator=g), g


def test_flow_loss_is_zero_for_the_exact_velocity_and_sees_the_course_interpolation():
    x1, x0, g = _data()
    t = torch.linspace(0, 0.9, x1.shape[0])
    seen = {}

    def oracle(x_t, tt, c):
        seen.update(x_t=x_t, t=tt)
        return x1 - x0

    loss, t_out = flow_loss(oracle, x1, None, generator=g, noise=x0, t=t)
    assert torch.all(loss == 0) and loss.shape == (6,)
    assert torch.equal(t_out, t) and torch.equal(seen["t"], t)
    torch.testing.assert_close(
        seen["x_t"], (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1
    )
    zero_loss, _ = flow_loss(
        lambda x, tt, c: torch.zeros_like(x), x1, None, generator=g, noise=x0, t=t
    )
    torch.testing.assert_close(zero_loss, (x1 - x0).pow(2).flatten(1).mean(1))


def test_ddpm_loss_targets_the_noise_at_the_agreed_indexing():
    x0, eps, g = _data()
    ab = torch.linspace(0.99, 0.01, 300)
    i = torch.tensor([0, 1, 50, 150, 298, 299])
    seen = {}

    def oracle(x_t, t, c):
        seen.update(x_t=x_t, t=t, c=c)
        return eps

    loss, t = ddpm_loss(oracle, x0, None, alphas_cumprod=ab, generator=g, noise=eps, i=i)
    assert torch.all(loss == 0)
    torch.testing.assert_close(t, (i + 1).float() / 300)  # the UNet is given (i + 1) / T
    a = ab[i].view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["x_t"], a.sqrt() * x0 + (1 - a).sqrt() * eps)
    drawn_loss, drawn_t = ddpm_loss(
        lambda x, t, c: torch.zeros_like(x),
        x0,
        None,
        alphas_cumprod=ab,
        generator=torch.Generator().manual_seed(1),
    )
    assert drawn_t.min() >= 1 / 300 and drawn_t.max() <= 1 and drawn_loss.shape == (6,)


def test_min_snr_weighting_scales_only_the_low_noise_steps():
    x0, eps, g = _data()
    ab = torch.linspace(0.99, 0.01, 300)
    i = torch.tensor([0, 10, 50, 150, 298, 299])
    zero = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    weights = ddpm_loss_weights(ab, "min-snr", 5.0)
    plain, _ = ddpm_loss(zero, x0, None, alphas_cumprod=ab, generator=g, noise=eps, i=i)
    weighted, _ = ddpm_loss(
        zero, x0, None, alphas_cumprod=ab, generator=g, noise=eps, i=i, weights=weights
    )
    snr = ab / (1 - ab)
    raw = torch.where(snr > 5, 5 / snr, torch.ones_like(snr))
    torch.testing.assert_close(weights, raw / raw.mean())
    torch.testing.assert_close(weighted, plain * weights[i])
    assert weighted[0] < plain[0] / 10 and weights[150] == weights[299]  # SNR 99 vs < 1
    assert ddpm_loss_weights(ab, "none") is None


def test_flow_weighting_makes_the_noise_loss_flow_matchings_velocity_loss():
    """A velocity model u, read as a noise model, has weighted DDPM loss = flow loss at the same
    noise level, up to the weights' mean: the flow weighting is flow matching's, step for step."""
    x1, noise, g = _data()
    ab = torch.linspace(0.99, 0.01, 300)
    i = torch.tensor([0, 10, 50, 150, 298, 299])
    u = lambda x, tau, c: 0.3 * x + tau.view(-1, 1, 1, 1) * x.flip(-1)  # noqa: E731  any velocity
    scale = ab[i].sqrt() + (1 - ab[i]).sqrt()
    tau = ab[i].sqrt() / scale

    def as_eps(x_vp, t, c):  # samplers' VelocityAsEps at the drawn steps: eps = x_flow - tau u
        x_flow = x_vp / scale.view(-1, 1, 1, 1)
        return x_flow - tau.view(-1, 1, 1, 1) * u(x_flow, tau, c)

    snr = ab / (1 - ab)
    raw = (1 + snr.rsqrt()) ** 2
    weights = ddpm_loss_weights(ab, "flow")
    torch.testing.assert_close(weights, raw / raw.mean())
    weighted, _ = ddpm_loss(
        as_eps, x1, None, alphas_cumprod=ab, generator=g, noise=noise, i=i, weights=weights
    )
    velocity, _ = flow_loss(u, x1, None, generator=g, noise=noise, t=tau)
    torch.testing.assert_close(weighted * raw.mean(), velocity, rtol=1e-4, atol=1e-6)
    assert weights[299] > 10 * weights[0]  # the noisiest step counts most


def test_loss_weighting_is_for_ddpm_only():
    from training.config import ConfigError, validate

    cfg = make_options("ddpm-class", loss_weighting="min-snr", min_snr_gamma=2.0)
    assert (cfg.loss_weighting, cfg.min_snr_gamma) == ("min-snr", 2.0)
    with pytest.raises(ConfigError, match="DDPM"):
        validate(make_options("flow-class", loss_weighting="flow"))
    with pytest.raises(ConfigError, match="positive"):
        make_options("ddpm-class", loss_weighting="min-snr", min_snr_gamma=0.0)
    with pytest.raises(ConfigError, match="loss-weighting min-snr"):
        make_options("ddpm-class", min_snr_gamma=2.0)
    with pytest.raises(ConfigError, match='\'loss_weighting\' must be one of "none", "min-snr"'):
        make_options("ddpm-class", loss_weighting="p2")


def test_single_step_denoiser_and_pure_noise_losses():
    x, eps, g = _data(lo=0.0)
    loss, t = denoiser_loss(lambda z: z, x, sigma=0.5, generator=g, noise=eps)
    assert t is None
    torch.testing.assert_close(loss, (0.5 * eps).pow(2).flatten(1).mean(1))
    inputs = []
    loss, t = pure_noise_loss(
        lambda z: inputs.append(z) or torch.zeros_like(z), x, generator=g, noise=eps
    )
    assert t is None and torch.equal(inputs[0], eps)
    torch.testing.assert_close(loss, x.pow(2).flatten(1).mean(1))


def test_class_dropout_is_a_seeded_per_sample_mask():
    c = torch.nn.functional.one_hot(torch.arange(10).repeat(200), 10).float()
    a = drop_classes(c, 0.1, torch.Generator().manual_seed(3))
    b = drop_classes(c, 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    rows = a.sum(1)
    assert set(rows.tolist()) <= {0.0, 1.0}
    assert torch.equal(a[rows == 1], c[rows == 1])  # kept rows are untouched
    assert 0.05 < (rows == 0).float().mean() < 0.15


def test_loss_by_t_bins_sums_and_counts():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    sums, counts = loss_by_t_bins(losses, torch.tensor([0.0, 0.05, 0.55, 1.0]))
    assert sums.tolist() == [3.0, 0, 0, 0, 0, 3.0, 0, 0, 0, 4.0]
    assert counts.tolist() == [2.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    sums, counts = loss_by_t_bins(losses, None)
    assert counts.sum() == 0


@pytest.mark.parametrize("experiment", ["denoiser", "pure-noise", "ddpm-class", "flow-time"])
def test_make_objective_dispatches_on_the_experiment(experiment):
    cfg = make_options(experiment)
    lo = cfg.data_range[0]
    x, _, _ = _data(lo=lo)
    c = torch.eye(10)[:6] if cfg.class_conditional else None
    model = (lambda z: z * 0) if cfg.kind in ("denoiser", "pure-noise") else (lambda z, t, c: z * 0)
    ab = torch.linspace(0.99, 0.01, 300) if cfg.kind == "ddpm" else None
    loss, t = make_objective(cfg, ab)(model, x, c, torch.Generator().manual_seed(0))
    assert loss.shape == (6,) and torch.isfinite(loss).all()
    assert (t is None) == (cfg.kind in ("denoiser", "pure-noise"))
