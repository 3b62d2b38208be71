"""load_lab_model (errors, conventions, samplers) and the MnistBackend plugin."""

import dataclasses
import json

import pytest
import torch

from tests.fixtures.tiny_run import tiny_args
from training import cli
from training.backend import MnistBackend
from training.checkpoints import CheckpointError
from training.pretrained import CPU_MAX_BATCH, load_lab_model

TINY = tiny_args("--steps", "2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for experiment in ("flow-class", "ddpm-class", "ddpm-time", "pure-noise"):
        assert cli.main([experiment, *TINY, "--runs-dir", str(runs)]) == 0
    return runs


def test_lab_model_conventions(runs):
    lab = load_lab_model(runs / "ddpm-class")
    assert lab.kind == "ddpm" and lab.class_conditional and not lab.unet.training
    assert lab.alphas_cumprod.shape == (300,)
    oh = lab.one_hot([3, -1])
    assert oh[0].argmax() == 3 and oh[0].sum() == 1 and oh[1].sum() == 0
    with pytest.raises(ValueError, match="labels must be in"):
        lab.one_hot([10])
    seen = []
    lab.unet.forward = lambda x, t, c: seen.append(t) or torch.zeros_like(x)
    lab.eps_model(torch.zeros(2, 1, 28, 28), torch.tensor([0, 299]), None)
    assert torch.allclose(seen[0], torch.tensor([1 / 300, 1.0]))  # i -> (i + 1) / T


@pytest.mark.parametrize(
    "run, sampler",
    [
        ("ddpm-class", "ddpm"),
        ("ddpm-class", "ddim"),
        ("flow-class", "euler"),
        ("flow-class", "heun"),
        ("flow-class", "ddim"),
        ("flow-class", "dpmpp_2m"),
        ("ddpm-class", "dpmpp_2m"),
        ("ddpm-time", "ddpm"),
        ("pure-noise", None),
    ],
)
def test_sample_through_the_sampler_table(runs, run, sampler):
    lab = load_lab_model(runs / run)
    steps = []
    labels = [0, 5, -1] if lab.class_conditional else [-1, -1, -1]
    x = lab.sample(
        labels,
        sampler=sampler,
        steps=4,
        generator=torch.Generator().manual_seed(0),
        callback=steps.append,
    )
    assert x.shape == (3, 1, 28, 28) and x.isfinite().all()
    assert [s["i"] for s in steps] == ([] if run == "pure-noise" else [0, 1, 2, 3])
    if steps:
        assert set(steps[0]) == {"i", "t", "x", "denoised"}
        flow_grid = run == "flow-class" and sampler in ("euler", "heun", "dpmpp_2m")
        assert isinstance(steps[0]["t"], float if flow_grid else int)
    y = lab.sample(labels, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    if run != "pure-noise":  # the 2-step pure-noise model's output is clamped to -1 everywhere
        z = lab.sample(labels, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(1))
        assert not torch.equal(x, z)


@pytest.mark.parametrize("run, first_order", [("flow-class", "euler"), ("ddpm-class", "ddim")])
def test_dpmpp_2m_walks_the_models_own_schedule(runs, run, first_order):
    """DPM-Solver++(2M)'s first step is first order: one step of it is Euler on a flow model's
    time grid and DDIM on a DDPM model's VP schedule, the same images from the same noise."""
    lab = load_lab_model(runs / run)
    x, y = (
        lab.sample([0, 5, -1], sampler=s, steps=1, generator=torch.Generator().manual_seed(0))
        for s in ("dpmpp_2m", first_order)
    )
    assert torch.allclose(x, y, atol=1e-5)


def test_time_only_models_draw_unconditional_samples_only(runs):
    lab = load_lab_model(runs / "ddpm-time")
    assert lab.grid_labels(2).tolist() == [-1] * 20
    with pytest.raises(ValueError, match="not class-conditional"):
        lab.sample([3], steps=2)
    assert load_lab_model(runs / "ddpm-class").grid_labels(2).tolist() == [*range(10)] * 2


def test_chunked_sampling_is_reproducible_at_a_batch_size(runs):
    lab = load_lab_model(runs / "ddpm-class")
    labels = list(range(10))

    def draw(batch_size):
        return lab.sample(
            labels, steps=3, generator=torch.Generator().manual_seed(0), batch_size=batch_size
        )

    assert torch.equal(draw(4), draw(4)) and draw(4).shape == (10, 1, 28, 28)
    assert not torch.equal(draw(4), draw(None))  # documented: images depend on the batch size


def test_network_chunks_change_no_image(runs):
    lab = load_lab_model(runs / "ddpm-class")
    assert lab.max_batch == CPU_MAX_BATCH[lab.precision]  # loaded on the CPU
    calls = []
    lab.unet.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    labels = [*range(10)] * 3
    whole = dataclasses.replace(lab, max_batch=None).sample(
        labels, steps=3, guidance_scale=5, generator=torch.Generator().manual_seed(0)
    )
    assert calls == [60] * 3  # one call a step: conditional and unconditional halves batched
    calls.clear()
    chunked = dataclasses.replace(lab, max_batch=16).sample(
        labels, steps=3, guidance_scale=5, generator=torch.Generator().manual_seed(0)
    )
    assert calls == [15, 15, 15, 15] * 3  # equal chunks of at most 16
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_keep_freed_memory_applies_on_glibc():
    import platform

    from samplers.app.tuning import keep_freed_memory

    assert keep_freed_memory() == (platform.libc_ver()[0] == "glibc")


def test_sampling_precision_follows_the_machine(runs):
    from samplers.app.tuning import cpu_bf16_is_faster

    assert load_lab_model(runs / "flow-class").precision == (
        "bf16" if cpu_bf16_is_faster() else "no"
    )
    fp32 = load_lab_model(runs / "flow-class", precision="no")
    assert fp32.precision == "no"
    x = fp32.sample([1, 2], steps=2, generator=torch.Generator().manual_seed(0))
    bf16 = load_lab_model(runs / "flow-class", precision="bf16")
    y = bf16.sample([1, 2], steps=2, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and not torch.equal(x, y)
    torch.testing.assert_close(x, y, atol=0.1, rtol=0)


def test_load_errors(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_lab_model(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((runs / "flow-class" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_lab_model(empty)
    with pytest.raises(CheckpointError, match="no checkpoint 7"):
        load_lab_model(runs / "flow-class", 7)


def test_corrupt_and_mismatched_checkpoints(runs, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(runs / "ddpm-time", bad)
    weights = bad / "checkpoints" / "epoch-0001" / "model.safetensors"
    weights.write_bytes(b"\x00garbage" * 3)
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: not a readable safetensors file"
    ):
        load_lab_model(bad)
    other = tmp_path / "other"
    shutil.copytree(runs / "ddpm-time", other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "hidden": 8}))
    with pytest.raises(CheckpointError, match="does not fit the run's model"):
        load_lab_model(other)
    ddpm_class = {"experiment": "ddpm-class", "conditioning": "class"}
    (other / "config.json").write_text(json.dumps({**cfg, **ddpm_class}))
    with pytest.raises(CheckpointError, match="a checkpoint of 'ddpm-time'"):
        load_lab_model(other)


def test_mnist_backend(runs):
    for run in ("flow-class", "ddpm-class"):
        b = MnistBackend(runs / run)
        assert (b.name, b.image_size, b.channels) == ("mnist", 28, 1)
        assert b.timesteps[0] == 299 and b.timesteps[-1] == -1 and len(b.timesteps) == 31
        cond = b.encode(["3", ""])
        assert cond.shape == (2, 10) and cond[1].sum() == 0 and cond[0, 3] == 1
        eps = b(torch.randn(2, 1, 28, 28), 150, cond)
        assert eps.shape == (2, 1, 28, 28) and torch.isfinite(eps).all()
    with pytest.raises(ValueError, match="MNIST prompts"):
        b.encode(["a cat"])
    with pytest.raises(NotImplementedError, match="no super-resolution"):
        b.upsample(torch.zeros(1, 1, 28, 28), ["3"])
    ex = b.example_images()
    assert len(ex) == 10 and ex["digit-7"].shape == (1, 1, 28, 28) and ex["digit-7"].min() == -1
    assert MnistBackend(runs / "ddpm-time").encode(["1"]) is None
    with pytest.raises(ValueError, match="not a diffusion model"):
        MnistBackend(runs / "pure-noise")
