"""Tiny runs of every experiment write the whole run record; length, pruning and no-scheduler
rules."""

import json
import math

import pytest
import torch

from samplers.app.devices import resolve_mixed_precision
from training import cli
from training.checkpoints import list_checkpoints
from training.config import EXPERIMENTS, NO_SCHEDULER_EMA_DECAY, make_config, resolve_length
from training.pretrained import load_lab_model
from training.runs import list_runs, read_config, read_metrics, read_summary

TINY = [
    "--dataset",
    "mnist-5k",
    "--hidden",
    "4",
    "--batch-size",
    "8",
    "--period-steps",
    "2",
    "--preview-steps",
    "2",
    "--log-every",
    "1",
    "--wandb-mode",
    "offline",
]


def tiny_run(runs, experiment, *extra, steps=4):
    argv = [experiment, *TINY, "--steps", str(steps), "--runs-dir", str(runs), *extra]
    assert cli.main(argv) == 0
    return list_runs(runs)[0].path  # the newest run


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_tiny_run_of_every_experiment_writes_every_artifact(tmp_path, experiment):
    run = tiny_run(tmp_path, experiment)
    cfg = read_config(run)
    assert cfg["experiment"] == experiment and cfg["dataset"] == "mnist-5k"
    assert cfg["scheduler"] == (experiment not in ("denoiser", "pure-noise"))
    assert (
        cfg["total_steps"] == 4 and cfg["period_steps"] == 2 and cfg["extra"]["train_size"] == 4500
    )
    assert cfg["extra"]["mixed_precision"] == resolve_mixed_precision("auto", torch.device("cpu"))

    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["epoch"] == 2.0
    for r in rows:
        assert {"step", "epoch", "time", "loss", "lr", "images_per_s", "loss_t_bin"} <= r.keys()
        assert len(r["loss_t_bin"]) == 10 and math.isfinite(r["loss"])
    binned = [v for v in rows[-1]["loss_t_bin"] if v is not None]
    assert (binned == []) == (experiment in ("denoiser", "pure-noise"))

    assert [c.period for c in list_checkpoints(run)] == [1, 2]
    for c in list_checkpoints(run):
        assert {p.name for p in c.path.iterdir()} == {"model.safetensors", "state.pt", "meta.json"}
        assert c.meta["experiment"] == experiment and c.meta["step"] == 2 * c.period
    samples = {p.name for p in (run / "samples").iterdir()}
    assert {"epoch-0001.png", "epoch-0002.png"} <= samples
    assert ("sampling.gif" in samples) == (experiment not in ("denoiser", "pure-noise"))

    summary = read_summary(run)
    assert summary["status"] == "finished" and summary["step"] == 4 and summary["epoch"] == 2
    assert summary["wandb"]["mode"] == "offline" and summary["wandb"]["sync_command"].startswith(
        "wandb sync "
    )
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [r.name for r in list_runs(tmp_path)] == [experiment]

    lab = load_lab_model(run)
    x = lab.sample(lab.grid_labels(1), steps=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (10, 1, 28, 28) and x.isfinite().all()


def test_no_scheduler_compensation_is_recorded_and_samples_use_the_ema(tmp_path):
    run = tiny_run(tmp_path, "flow-class", "--no-scheduler")
    assert run.name == "flow-class-no-scheduler"
    cfg = read_config(run)
    assert cfg["scheduler"] is False and cfg["ema_decay"] == NO_SCHEDULER_EMA_DECAY
    assert (
        cfg["lr"] == pytest.approx(1e-2 * 10**-0.5)
        and "moving average" in cfg["no_scheduler_compensation"]
    )
    assert {r["lr"] for r in read_metrics(run)} == {cfg["lr"]}  # constant
    ckpt = list_checkpoints(run)[-1]
    assert (
        ckpt.meta["sampling_weights"] == "ema.safetensors"
        and (ckpt.path / "ema.safetensors").is_file()
    )
    ema = load_lab_model(run).unet.state_dict()
    from safetensors.torch import load_file

    raw = load_file(ckpt.path / "model.safetensors")
    assert torch.equal(ema["out.weight"], load_file(ckpt.path / "ema.safetensors")["out.weight"])
    assert not torch.equal(ema["out.weight"], raw["out.weight"])


def test_scheduler_decays_lr_once_a_period_to_a_tenth(tmp_path):
    run = tiny_run(tmp_path, "ddpm-time", steps=6)
    lrs = [r["lr"] for r in read_metrics(run)]
    gamma = 0.1 ** (1 / 3)
    assert lrs == pytest.approx([1e-3] * 2 + [1e-3 * gamma] * 2 + [1e-3 * gamma**2] * 2)


def test_checkpoints_keep_the_last_three_and_the_milestones(tmp_path):
    run = tiny_run(tmp_path, "flow-time", "--period-steps", "1", "--preview-steps", "1", steps=8)
    assert [c.period for c in list_checkpoints(run)] == [1, 5, 6, 7, 8]
    assert not list((run / "checkpoints").glob(".*"))


def test_length_rules():
    # default length on a small dataset: the course's number of steps (period = ceil(60000/batch))
    cfg = resolve_length(make_config("flow-class"), 4500, pass_steps=71)
    assert (cfg.period_steps, cfg.total_steps) == (938, 9380)
    assert cfg.lr_gamma == pytest.approx(0.1**0.1)
    # an explicit --epochs N means N passes over the chosen dataset
    cfg = resolve_length(make_config("flow-class", epochs=3), 4500, pass_steps=71)
    assert (cfg.period_steps, cfg.total_steps) == (71, 213)
    # full MNIST: a period is a pass; --steps overrides the total
    cfg = resolve_length(make_config("ddpm-class", steps=1000), 60000, pass_steps=469)
    assert (cfg.period_steps, cfg.total_steps) == (469, 1000) and cfg.lr_gamma == pytest.approx(
        0.1 ** (1 / 3)
    )
    assert resolve_length(make_config("denoiser"), 60000, pass_steps=235).lr_gamma == 1.0


def test_course_defaults():
    d, p, t, c = (EXPERIMENTS[k] for k in ("denoiser", "ddpm-time", "flow-time", "flow-class"))
    assert (d.sigma, d.hidden, d.batch_size, d.lr, d.epochs, d.scheduler) == (
        0.5,
        128,
        256,
        1e-4,
        5,
        False,
    )
    assert (p.num_timesteps, p.beta_start, p.beta_end, p.hidden, p.batch_size, p.lr, p.epochs) == (
        300,
        1e-4,
        0.02,
        64,
        128,
        1e-3,
        20,
    )
    assert (
        p.conditioning == "time-add" and t.conditioning == "time-mul" and c.conditioning == "class"
    )
    assert (t.hidden, t.batch_size, t.lr, t.epochs, t.sampler, t.sample_steps) == (
        64,
        64,
        1e-2,
        10,
        "euler",
        300,
    )
    assert (c.guidance_scale, c.p_uncond) == (5.0, 0.1)
    assert json.loads(json.dumps(c.to_dict()))["experiment"] == "flow-class"


def test_auto_mixed_precision_picks_the_faster_native_precision(monkeypatch):
    import samplers.app.tuning as tuning

    cpu = torch.device("cpu")
    assert resolve_mixed_precision("fp16", cpu) == "fp16"  # an explicit choice is kept
    assert resolve_mixed_precision("auto", cpu) == ("bf16" if tuning.cpu_bf16_is_faster() else "no")
    assert resolve_mixed_precision("auto", torch.device("mps")) == "no"
    kernels = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    for amx, avx512_bf16, vendor, faster in [
        (True, True, "GenuineIntel", kernels),
        (False, True, "GenuineIntel", False),
        (False, True, "AuthenticAMD", kernels),
        (False, False, "AuthenticAMD", False),
    ]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda b=avx512_bf16: b)
        monkeypatch.setattr(tuning, "cpu_vendor", lambda vendor=vendor: vendor)
        assert tuning.cpu_bf16_is_faster() == faster, (amx, avx512_bf16, vendor)


@pytest.mark.parametrize("warmup", [10.0, 4.0])
def test_ema_follows_its_warmup(warmup):
    from training.trainer import EMA

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.999, warmup=warmup)
    expected = 0.0
    for n in range(1, 6):
        with torch.no_grad():
            net.weight.fill_(float(n))
        ema.update(net, n)
        d = min(0.999, (1 + n) / (warmup + n))
        expected = d * expected + (1 - d) * n
        assert ema.model.weight.item() == pytest.approx(expected)
    with pytest.raises(Exception, match="ema-warmup must be > 1"):
        make_config("flow-class", ema_warmup=1.0)


def test_recalibrate_batchnorm_sets_the_exact_average_of_batch_statistics():
    from training.trainer import recalibrate_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.BatchNorm2d(3)).eval()
    bn = model[1]
    bn.running_mean.fill_(5.0)
    batches = [
        torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(k)) for k in range(3)
    ]
    recalibrate_batchnorm(model, lambda m, k: m(batches[k]), batches=3)
    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    assert bn.momentum == 0.1 and not model.training  # restored


def test_ema_checkpoints_carry_recalibrated_batchnorm(tmp_path):
    from safetensors.torch import load_file

    run = tiny_run(tmp_path, "flow-class", "--recipe", "fast", "--hidden", "8", steps=4)
    ckpt = list_checkpoints(run)[-1].path
    live, ema = load_file(ckpt / "model.safetensors"), load_file(ckpt / "ema.safetensors")
    means = [k for k in ema if k.endswith("running_mean")]
    assert means and all(not torch.equal(live[k], ema[k]) for k in means)
