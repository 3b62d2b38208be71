"""Tiny runs of every experiment write the whole run record; length, pruning and no-scheduler
rules."""

import gc
import json
import math

import pytest
import torch

from samplers.app.devices import resolve_mixed_precision
from tests.fixtures.tiny_run import tiny_args
from training import cli
from training.checkpoints import list_checkpoints
from training.config import (
    EXPERIMENTS,
    NO_SCHEDULER_EMA_DECAY,
    ConfigError,
    make_options,
    start_plan,
)
from training.pretrained import load_lab_model
from training.runlock import holder
from training.runs import list_runs, load_run_config, read_config, read_metrics, read_summary
from training.trainer import Trainer

TINY = tiny_args(wandb="offline")


def tiny_run(runs, experiment, *extra, steps=4):
    argv = [experiment, *TINY, "--steps", str(steps), "--runs-dir", str(runs), *extra]
    assert cli.main(argv) == 0
    return list_runs(runs)[0].path  # the newest run


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_tiny_run_of_every_experiment_writes_every_artifact(tmp_path, experiment):
    run = tiny_run(tmp_path, experiment)
    config = load_run_config(run)
    options, plan = config.options, config.plan
    assert options.experiment == experiment and options.dataset == plan.dataset == "mnist-5k"
    assert options.scheduler == (experiment not in ("denoiser", "pure-noise"))
    assert (plan.total_steps, plan.epoch_steps, plan.epochs, plan.train_size) == (4, 2, 2, 4500)
    assert (plan.world_size, plan.device) == (1, "cpu")
    assert plan.mixed_precision == resolve_mixed_precision("auto", torch.device("cpu"))
    assert read_config(run)["plan"]["total_steps"] == 4  # config.json: the options, and the plan

    rows = read_metrics(run)
    assert [(r["step"], r["epoch"]) for r in rows] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    for r in rows:
        assert {"step", "epoch", "time", "loss", "lr", "images_per_s", "loss_t_bin"} <= r.keys()
        assert len(r["loss_t_bin"]) == 10 and math.isfinite(r["loss"])
    binned = [v for v in rows[-1]["loss_t_bin"] if v is not None]
    assert (binned == []) == (experiment in ("denoiser", "pure-noise"))

    assert [c.epoch for c in list_checkpoints(run)] == [1, 2]
    for c in list_checkpoints(run):
        assert {p.name for p in c.path.iterdir()} == {"model.safetensors", "state.pt", "meta.json"}
        assert c.meta["experiment"] == experiment and c.meta["step"] == 2 * c.epoch
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
    assert cfg["lr"] == pytest.approx(1e-2 * 10**-0.5)  # the compensation, in the values only
    assert "moving average" not in (run / "config.json").read_text()  # no help text
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


def test_scheduler_decays_lr_once_an_epoch_to_a_tenth(tmp_path):
    run = tiny_run(tmp_path, "ddpm-time", steps=6)
    lrs = [r["lr"] for r in read_metrics(run)]
    gamma = 0.1 ** (1 / 3)
    assert lrs == pytest.approx([1e-3] * 2 + [1e-3 * gamma] * 2 + [1e-3 * gamma**2] * 2)


def test_checkpoints_keep_the_last_three_and_the_milestones(tmp_path):
    run = tiny_run(tmp_path, "flow-time", "--epoch-steps", "1", "--preview-steps", "1", steps=8)
    assert [c.epoch for c in list_checkpoints(run)] == [1, 5, 6, 7, 8]
    assert not list((run / "checkpoints").glob(".*"))


def plan(options, train_size, pass_steps):
    return start_plan(
        options,
        dataset="mnist-5k" if train_size < 60000 else "mnist",
        train_size=train_size,
        pass_steps=pass_steps,
        world_size=1,
        device="cpu",
        mixed_precision="no",
    )


def test_length_rules():
    # default length on a small dataset: the course's number of steps (epoch = ceil(60000/batch))
    p = plan(make_options("flow-class"), 4500, pass_steps=71)
    assert (p.epoch_steps, p.total_steps, p.epochs) == (938, 9380, 10)
    assert p.lr_gamma == pytest.approx(0.1**0.1) and p.lr_decay_steps == 9380
    # an explicit --epochs N means N passes over the chosen dataset
    p = plan(make_options("flow-class", epochs=3), 4500, pass_steps=71)
    assert (p.epoch_steps, p.total_steps) == (71, 213)
    # full MNIST: an epoch is a pass; --steps overrides the total, the last epoch partial
    p = plan(make_options("ddpm-class", steps=1000), 60000, pass_steps=469)
    assert (p.epoch_steps, p.total_steps, p.epochs) == (469, 1000, 3)
    assert p.lr_gamma == pytest.approx(0.1 ** (1 / 3))
    assert [p.epoch_of(s) for s in (1, 469, 470, 1000)] == [1, 1, 2, 3]
    assert plan(make_options("denoiser"), 60000, pass_steps=235).lr_gamma == 1.0
    # the fast recipe's 1,400 steps on mnist-5k: 938-step course epochs, the second partial
    p = plan(make_options("flow-class", recipe="fast"), 4500, pass_steps=71)
    assert (p.epoch_steps, p.total_steps, p.epochs) == (938, 1400, 2)


def test_course_defaults():
    d, p, t, c = (EXPERIMENTS[k] for k in ("denoiser", "ddpm-time", "flow-time", "flow-class"))
    assert (d.sigma, d.hidden, d.batch_size, d.lr, d.course_epochs, d.scheduler) == (
        0.5,
        128,
        256,
        1e-4,
        5,
        False,
    )
    assert (
        p.num_timesteps,
        p.beta_start,
        p.beta_end,
        p.hidden,
        p.batch_size,
        p.lr,
        p.course_epochs,
    ) == (
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
    assert (t.hidden, t.batch_size, t.lr, t.course_epochs, t.sampler, t.sample_steps) == (
        64,
        64,
        1e-2,
        10,
        "euler",
        300,
    )
    assert (c.guidance_scale, c.p_uncond) == (5.0, 0.1)
    assert json.loads(json.dumps(c.to_json()))["experiment"] == "flow-class"


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
    from training.trainer import ema_model

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = ema_model(net, decay=0.999, warmup=warmup)
    expected = 0.0
    for n in range(1, 6):
        with torch.no_grad():
            net.weight.fill_(float(n))
        ema.update_parameters(net)  # the update after step n
        d = min(0.999, (1 + n) / (warmup + n))
        expected = d * expected + (1 - d) * n
        assert ema.module.weight.item() == pytest.approx(expected)
    assert int(ema.n_averaged) == 6  # steps + 1: what a resume sets it to
    with pytest.raises(Exception, match="ema-warmup must be > 1"):
        make_options("flow-class", ema_warmup=1.0)


def test_batchnorm_recalibration_takes_the_exact_average_of_the_objectives_batches():
    from torch.optim.swa_utils import update_bn

    from training.trainer import BatchesThroughObjective

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.BatchNorm2d(3)).eval()
    bn = model[1]
    bn.running_mean.fill_(5.0)
    batches = [
        torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(k)) for k in range(3)
    ]

    def step(net, k):  # as the trainer's: the network called on batch k's (noised) inputs
        assert net.training
        net(batches[k] * 2)

    update_bn(range(3), BatchesThroughObjective(model, step))
    with torch.no_grad():
        feats = [model[0](b * 2) for b in batches]
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


def test_a_set_up_that_fails_frees_the_run_at_once(tmp_path):
    """A refused resume releases the run's lock before it raises, not when the garbage collector
    reaches the half-built Trainer (which the traceback keeps alive): the same process can train
    the run again at once."""
    run = tiny_run(tmp_path, "flow-class", "--name", "done", steps=2)
    options = load_run_config(run).options
    gc.disable()
    try:
        with pytest.raises(ConfigError, match="has trained 2 steps already") as refused:
            Trainer(options, tmp_path, resume=True)
        assert refused.traceback and holder(run) == (False, None)
    finally:
        gc.enable()
