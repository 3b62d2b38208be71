"""Recipes: named defaults over the course's, recorded in the run, composing with every option."""

import math

import pytest
import torch

from samplers.schedules import linear_alphas_cumprod
from tests.fixtures.tiny_run import tiny_args
from training import cli
from training.config import (
    EXPERIMENTS,
    FAST_RECIPE,
    RECIPES,
    ConfigError,
    make_options,
    start_plan,
    validate,
)
from training.objectives import sample_ddpm_step, sample_flow_time
from training.runs import read_config, read_metrics
from training.schedules import WarmupCosine, make_scheduler


def test_course_recipe_is_the_course_exactly():
    for name, base in EXPERIMENTS.items():
        cfg = make_options(name)
        assert cfg.recipe == "course" and make_options(name, recipe="course") == cfg
        assert (
            cfg.lr,
            cfg.batch_size,
            cfg.hidden,
            cfg.lr_schedule,
            cfg.warmup_steps,
            cfg.ema_decay,
            cfg.time_sampling,
        ) == (base.lr, base.batch_size, base.hidden, "exponential", 0, None, "uniform")


@pytest.mark.parametrize("experiment", ["flow-class", "ddpm-class"])
def test_fast_recipe_applies_its_overrides_and_explicit_options_win(experiment):
    kind = EXPERIMENTS[experiment].kind
    cfg = make_options(experiment, recipe="fast")
    assert cfg.recipe == "fast" and set(RECIPES) >= {"course", "fast"}
    assert all(getattr(cfg, k) == v for k, v in FAST_RECIPE[kind].items())
    mine = make_options(experiment, recipe="fast", lr=1e-4, ema_decay=0.99, steps=7, hidden=16)
    assert (mine.lr, mine.ema_decay, mine.steps, mine.hidden) == (1e-4, 0.99, 7, 16)
    by_epochs = make_options(experiment, recipe="fast", epochs=2)  # --epochs replaces its steps
    assert by_epochs.steps is None and by_epochs.epochs == 2
    with pytest.raises(ConfigError, match="give --steps or --epochs, not both"):
        make_options(experiment, recipe="fast", epochs=2, steps=10)


@pytest.mark.parametrize("experiment", ["flow-class", "ddpm-class"])
def test_help_quotes_each_recipes_defaults_of_that_experiment(experiment, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, even mid-word
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([experiment, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    course, fast = make_options(experiment), make_options(experiment, recipe="fast")
    for option, field in (
        ("hidden", "hidden"),
        ("batch-size", "batch_size"),
        ("sample-steps", "sample_steps"),
        ("time-sampling", "time_sampling"),
    ):
        quoted = (
            f"course: {getattr(course, field)}; fast: {getattr(fast, field)}"
            if getattr(course, field) != getattr(fast, field)
            else f"{getattr(course, field)}"
        )
        help_text = text.split(f"--{option} ")[2].split(" --")[0]  # [1] is the usage line
        assert f"default {quoted}" in help_text, (option, help_text)


def test_fast_no_scheduler_is_a_constant_rate():
    cfg = make_options("flow-class", recipe="fast", no_scheduler=True)
    assert not cfg.scheduler and cfg.warmup_steps == 0 and cfg.ema_decay
    assert cfg.lr == pytest.approx(1e-2 * 0.02**0.5)  # the middle of the cosine's 1e-2 -> 2e-4
    assert (
        make_options("flow-class", recipe="fast", no_scheduler=True, lr=3e-3).lr == 3e-3
    )  # explicit wins
    plan = start_plan(
        cfg,
        dataset="mnist-5k",
        train_size=4500,
        pass_steps=71,
        world_size=1,
        device="cpu",
        mixed_precision="no",
    )
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched, per_step = make_scheduler(opt, cfg, plan)
    rates = []
    for _ in range(plan.total_steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert per_step and len(set(rates)) == 1


def test_unknown_recipe_and_bad_combinations_raise():
    with pytest.raises(ConfigError, match="recipe"):
        make_options("flow-class", recipe="slow")
    with pytest.raises(ConfigError, match="warm-up"):
        make_options("flow-class", warmup_steps=10)  # the course's ExponentialLR has none


def test_samplers_that_cannot_run_on_the_model_are_refused_before_training():
    with pytest.raises(
        ConfigError,
        match="--preview-sampler / --preview-steps: sampler 'heun' does not apply to a ddpm model",
    ):
        make_options("ddpm-class", preview_sampler="heun")
    with pytest.raises(
        ConfigError,
        match="--sampler / --sample-steps: the ddpm sampler takes 1 to 300 steps on this model",
    ):
        make_options("ddpm-class", sample_steps=301)
    with pytest.raises(ConfigError, match="--preview-steps: the ddim sampler takes 1 to 300"):
        make_options("flow-class", preview_sampler="ddim", preview_steps=500)
    assert make_options("flow-class", preview_steps=500).preview_steps == 500  # heun: any count


def test_warmup_cosine_shape():
    f = WarmupCosine(total=110, warmup=10, final_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_logit_normal_time_is_inside_the_unit_interval_and_seeded():
    def g():
        return torch.Generator().manual_seed(3)

    t = sample_flow_time(20_000, g(), "cpu", density="logit-normal")
    assert 0 < t.min() and t.max() < 1 and abs(float(t.mean()) - 0.5) < 0.01
    assert float(((t > 0.25) & (t < 0.75)).float().mean()) > 0.6  # uniform: 0.5
    assert torch.equal(t, sample_flow_time(20_000, g(), "cpu", density="logit-normal"))


def test_logit_normal_ddpm_steps_are_flow_noise_levels_and_seeded():
    ab = linear_alphas_cumprod(300, 1e-4, 0.02)

    def g():
        return torch.Generator().manual_seed(3)

    i = sample_ddpm_step(50_000, ab, g(), density="logit-normal")
    assert i.dtype == torch.int64 and 0 <= i.min() and i.max() < 300
    assert torch.equal(i, sample_ddpm_step(50_000, ab, g(), density="logit-normal"))
    # flow's draws: log-SNR = 2 logit(tau) ~ N(0, 2^2), so P(|log-SNR| < 2) = P(|z| < 1) = 0.683
    # of the mass inside the schedule's log-SNR range [-2.99, 9.21] (0.932): 0.733
    log_snr = (ab / (1 - ab)).log()
    assert abs(float((log_snr[i].abs() < 2).float().mean()) - 0.683 / 0.932) < 0.01
    uniform = sample_ddpm_step(50_000, ab, g())  # the course: 191 of the 300 steps, 0.637
    assert abs(float((log_snr[uniform].abs() < 2).float().mean()) - 191 / 300) < 0.01


def test_time_sampling_is_for_models_with_a_time():
    assert make_options("ddpm-class", time_sampling="logit-normal").time_sampling == "logit-normal"
    with pytest.raises(ConfigError, match="no time"):
        validate(make_options("denoiser", time_sampling="logit-normal"))


def test_recipe_is_written_into_the_run_record(tmp_path):
    argv = ["flow-class", "--recipe", "fast", *tiny_args("--steps", "4", "--warmup-steps", "2")]
    argv += ["--runs-dir", str(tmp_path), "--name", "fast"]
    assert cli.main(argv) == 0
    cfg = read_config(tmp_path / "fast")
    assert (cfg["recipe"], cfg["lr_schedule"], cfg["time_sampling"], cfg["warmup_steps"]) == (
        "fast",
        "cosine",
        "logit-normal",
        2,
    )
    lrs = [r["lr"] for r in read_metrics(tmp_path / "fast")]
    peak, final = cfg["lr"], cfg["lr"] * cfg["lr_final_ratio"]
    assert lrs[0] == pytest.approx(peak) and lrs[-1] == pytest.approx(final)  # after warm-up, end
    assert not math.isclose(lrs[1], lrs[2])


def test_previews_default_to_the_50_step_sampler_and_options_win():
    from training.config import FAST_SAMPLER, preview_sampler

    assert preview_sampler(make_options("flow-class")) == FAST_SAMPLER["flow"] == ("heun", 50)
    assert preview_sampler(make_options("ddpm-class")) == FAST_SAMPLER["ddpm"] == ("ddpm", 50)
    fast_ddpm = make_options("ddpm-class", recipe="fast")  # its own sampler: DDPM 100; previews: 50
    assert (fast_ddpm.sampler, fast_ddpm.sample_steps) == ("ddpm", 100)
    assert preview_sampler(fast_ddpm) == ("ddpm", 50)
    assert preview_sampler(
        make_options("flow-class", preview_sampler="euler", preview_steps=7)
    ) == (
        "euler",
        7,
    )
