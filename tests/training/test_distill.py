"""Distilled students (training.distill): the widened UNet, the teacher data, the pair sampler, a
tiny distillation as a run like any other (read_run, sample, evaluate, exact resume), and the
one-line errors of a teacher that cannot teach."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import samplers
from training.checkpoints import load_weights, read_checkpoint
from training.cli import main
from training.config import ConfigError, TrainOptions, validate
from training.distill import (
    PSEUDO_HUBER_C,
    FlowMapObjective,
    RowGuided,
    distill,
    grid_times,
    load_teacher,
    sample_pairs,
    student_options,
    teacher_trajectories,
)
from training.flowmap import ddpm_unet_time, flow_time_of_alpha_bar
from training.models import STUDENT_TIME_EXTRA, UNet, fold_batchnorm
from training.pretrained import load_lab_model, unet_time
from training.runs import read_run

TINY = dict(trajectories=6, steps=4, batch_size=4, epoch_steps=2, log_every=1)


def tiny_student(teacher, runs_dir, **kw):
    return student_options(teacher, wandb_mode="disabled", device="cpu", **{**TINY, **kw})


@pytest.fixture
def teacher(fake_run):
    return fake_run("flow-class", name="teacher")


def test_widened_unet_equals_its_teacher_at_initialisation():
    torch.manual_seed(0)
    net = UNet(hidden=8, conditioning="class").train()
    for _ in range(2):  # BatchNorm statistics that are not the identity
        net(torch.randn(16, 1, 28, 28), torch.rand(16), torch.eye(10)[torch.arange(16) % 10])
    folded = fold_batchnorm(net)
    wide = folded.widened(2, 10)
    x, t = torch.randn(8, 1, 28, 28), torch.rand(8)
    c = torch.eye(10)[torch.arange(8)]
    extra_t, extra_c = torch.randn(8, 2), torch.randn(8, 10)
    with torch.no_grad():
        assert (wide(x, t, c, extra_t, extra_c) - folded(x, t, c)).abs().max().item() == 0.0
        assert (wide(x, t, c) - folded(x, t, c)).abs().max().item() == 0.0
    student = UNet(hidden=8, conditioning="class", time_extra=2, class_extra=10, norm=False)
    assert student.state_dict().keys() == wide.state_dict().keys()  # what a student run saves


def test_unet_keeps_its_checkpoint_layout():
    """No extra inputs: the same parameter names and shapes as before (old checkpoints load)."""
    net = UNet(hidden=8, conditioning="class")
    assert net.fc1_t[0].in_features == 1 and net.fc1_c[0].in_features == 10
    assert sum(p.numel() for p in UNet(hidden=64, conditioning="class").parameters()) == 2_019_201
    with pytest.raises(ValueError, match="no extra conditioning"):
        net(torch.zeros(1, 1, 28, 28), torch.zeros(1), None, torch.zeros(1, 2))


def test_ddpm_unet_time_is_exact_at_the_schedules_steps():
    ab = samplers.linear_alphas_cumprod(300)
    i = torch.tensor([0, 1, 57, 150, 299])
    tau = flow_time_of_alpha_bar(ab[i].double())
    assert torch.allclose(ddpm_unet_time(tau, ab), unet_time(i, 300).double(), atol=1e-9)
    mid = flow_time_of_alpha_bar((ab[150].double() * ab[151].double()).sqrt())
    assert unet_time(i[3:4], 300) < ddpm_unet_time(mid.view(1), ab) < unet_time(i[3:4] + 1, 300)


def test_pairs_are_segments_of_the_levels_grids_or_diagonal():
    g = torch.Generator().manual_seed(0)
    i, j = sample_pairs(20_000, 16, (1, 2, 4, 8, 16), 0.1, g)
    assert (i <= j).all() and (j <= 16).all() and (i >= 0).all()
    off = i < j
    span = j[off] - i[off]
    assert set(span.unique().tolist()) == {16, 8, 4, 2, 1}
    assert (i[off] % span == 0).all()  # a segment of the uniform N-step grid
    assert abs((~off).float().mean().item() - 0.1) < 0.01
    assert (i[~off] < 16).all()  # a diagonal pair has a velocity (states 0..15)


def test_row_guidance_pairs_only_the_rows_that_need_it():
    calls = []

    def model(x, t, c):
        calls.append(x.shape[0])
        return c.sum(1).view(-1, 1, 1, 1) * torch.ones_like(x)  # cond 1, uncond 0

    cond = torch.eye(10)[[1, 2, 3]]
    cond[2] = 0  # null class
    w = torch.tensor([1.0, 3.0, 5.0])
    out = RowGuided(model, cond, w)(torch.zeros(3, 1, 2, 2), torch.zeros(3))
    assert calls == [4]  # three rows and the one unconditional twin (row 1)
    assert out[:, 0, 0, 0].tolist() == [1.0, 3.0, 0.0]


@pytest.mark.parametrize("solver", ["dpmpp_2m", "heun"])
def test_teacher_data_lies_on_the_teachers_ode(teacher, solver):
    """dpmpp_2m makes new students' data; heun regenerates an older student's on resume. The
    teacher's velocity is swapped for cos(6t) x, which solvers of different orders walk apart."""
    lab, _ = load_teacher(teacher)
    lab.velocity_model = lambda x, t, cond=None: torch.cos(6 * t).view(-1, 1, 1, 1) * x
    d = student_options(teacher, trajectories=3, wandb_mode="disabled").distill
    d = replace(d, teacher_sampler=solver)
    data = teacher_trajectories(lab, d, seed=0)
    assert data.states.shape == (3, 17, 1, 28, 28) and data.velocities.shape == (3, 16, 1, 28, 28)
    assert d.times == tuple(k / 16 for k in range(17))
    model = RowGuided(lab.velocity_model, lab.one_hot(data.labels), data.w)
    x0 = data.states[:, 0].float()

    def error(sampler: str, k: int) -> float:  # state k against k steps of `sampler` (fp16 data)
        xk = samplers.get_sampler(sampler)(model, x0, samplers.Schedule(d.times[: k + 1]))
        return (xk - data.states[:, k].float()).abs().max().item()

    other = "heun" if solver == "dpmpp_2m" else "dpmpp_2m"
    assert error(solver, 16) < 5e-3 < error(other, 16) and error(solver, 2) < 5e-3
    v1 = model(data.states[:, 1].float(), torch.full((3,), d.times[1]))
    assert (v1 - data.velocities[:, 1].float()).abs().max() < 5e-3


def test_a_teacher_solver_must_walk_the_teachers_schedule(teacher):
    options = student_options(teacher, wandb_mode="disabled")
    wrong = replace(options.distill, teacher_sampler="ddim")
    with pytest.raises(
        ConfigError, match="does not walk a flow model's own schedule; choose from dpmpp_2m, heun$"
    ):
        validate(replace(options, distill=wrong))


def test_pseudo_huber_loss_is_the_squared_end_point_error_through_its_function(teacher):
    """Both losses see the same pairs; a record without `loss` (older students) reads "squared"."""
    lab, _ = load_teacher(teacher)
    options = student_options(teacher, trajectories=4, wandb_mode="disabled")
    data = teacher_trajectories(lab, options.distill, seed=0)
    student = lab.unet.widened(STUDENT_TIME_EXTRA, 10).float()

    def losses(loss: str) -> torch.Tensor:
        d = replace(options.distill, loss=loss)
        objective = FlowMapObjective(data, d, options, None, lab.one_hot)
        idx = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
        return objective(student, idx, None, torch.Generator().manual_seed(1))[0]

    assert options.distill.loss == "pseudo_huber"
    squared, huber = losses("squared"), losses("pseudo_huber")
    h = PSEUDO_HUBER_C * 16 / 2
    assert squared.min() > 0 and torch.allclose(huber, (squared + h * h).sqrt() - h)
    record = options.to_json()
    assert TrainOptions.from_json(record).distill == options.distill
    older = {k: v for k, v in record["distill"].items() if k != "loss"}
    distill_options = TrainOptions.from_json(record | {"distill": older}).distill
    assert distill_options is not None and distill_options.loss == "squared"


def test_ddpm_teacher_grid_starts_above_zero(fake_run):
    run = fake_run("ddpm-class", name="ddpm-teacher")
    lab, _ = load_teacher(run)
    d = student_options(run, wandb_mode="disabled").distill
    times = grid_times(lab, d)
    assert len(times) == 17 and times[-1] == 1.0 and 0.15 < times[0] < 0.2
    assert all(a < b for a, b in zip(times, times[1:], strict=False))


def test_a_student_is_a_run_like_any_other(teacher, tmp_path):
    runs = tmp_path / "students"
    options = tiny_student(teacher, runs, name="s")
    run_dir = distill(options, runs)
    run = read_run(run_dir)
    assert run.problem is None and run.summary.status == "finished"
    cfg = run.config.options
    assert cfg.sampler == "flowmap" and cfg.sample_steps == 4 and cfg.distill is not None
    assert cfg.distill.teacher == str(teacher) and cfg.distill.method == "flowmap"
    assert len(run.metrics().rows) == 4 and (run_dir / "samples" / "epoch-0002.png").is_file()
    lab = load_lab_model(run_dir)
    x = lab.sample([3, 4], guidance_scale=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 28, 28) and x.abs().max() <= 1
    with pytest.raises(ConfigError, match="flowmap only"):
        lab.sample([3], sampler="heun", steps=4)
    out = tmp_path / "s.npz"
    assert (
        main(["sample", str(run_dir), "--per-class", "1", "--steps", "2", "--out", str(out)]) == 0
    )
    with np.load(out) as f:
        assert f["images"].shape == (10, 28, 28) and str(f["sampler"]) == "flowmap"


def test_evaluate_uses_the_students_sampler_and_counts_one_call_a_step(teacher, tmp_path, capsys):
    from training.evaluation import plan_sweep

    run_dir = distill(tiny_student(teacher, tmp_path, name="s"), tmp_path)
    plan = plan_sweep(run_dir, steps=(1, 2), guidance_scales=(1, 5))
    assert plan.cells == (
        ("flowmap", 1, 1),
        ("flowmap", 1, 5),
        ("flowmap", 2, 1),
        ("flowmap", 2, 5),
    )
    from training.evaluation_record import nfe

    assert [nfe("flowmap", 2, g) for g in (None, 1, 5)] == [2, 2, 2]
    assert nfe("heun", 2, 5) == 8
    from training.classifier import ClassifierConfig
    from training.evaluation import format_evaluation, run_sweeps

    tiny = ClassifierConfig(width=4, feature_dim=16, passes=0.05, max_steps=3, batch_size=64)
    one = plan_sweep(run_dir, steps=(1,), guidance_scales=(5,))
    out = format_evaluation(run_sweeps([one], per_class=1, classifier_config=tiny))
    assert "a student takes the scale as an input" in out
    assert out.strip().splitlines()[-1].split()[:4] == ["flowmap", "1", "1", "5"]


def test_resume_is_bit_identical_to_an_uninterrupted_run(teacher, tmp_path):
    whole = distill(tiny_student(teacher, tmp_path, name="whole"), tmp_path)
    part = tiny_student(teacher, tmp_path, name="part")
    distill(part, tmp_path, stop_after=1)
    assert read_run(tmp_path / "part").summary.step == 2
    distill(part, tmp_path, resume=True)
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_weights(whole / "checkpoints" / "epoch-0002" / name)
        b = load_weights(tmp_path / "part" / "checkpoints" / "epoch-0002" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    meta = read_checkpoint(whole / "checkpoints" / "epoch-0002").meta
    assert (
        meta["loss"]
        == read_checkpoint(tmp_path / "part" / "checkpoints" / "epoch-0002").meta["loss"]
    )


def test_the_cli_distills_and_resumes(teacher, tmp_path, capsys):
    args = ["distill", str(teacher), "--runs-dir", str(tmp_path), "--name", "s"]
    args += ["--steps", "2", "--trajectories", "4", "--wandb-mode", "disabled", "--device", "cpu"]
    assert main(args) == 0
    assert "s: finished at step 2" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert cfg["distill"]["trajectories"] == 4 and cfg["sampler"] == "flowmap"
    assert main([*args, "--resume", "--steps", "2"]) == 2  # at its length already
    assert "pass a larger --steps" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda fake_run, tmp: fake_run("flow-time", name="t"), "class-conditional"),
        (lambda fake_run, tmp: fake_run("denoiser", name="t"), "class-conditional"),
        (lambda fake_run, tmp: tmp / "nowhere", "nowhere"),
    ],
)
def test_a_run_that_cannot_teach_is_one_line(fake_run, tmp_path, capsys, make, message):
    teacher = make(fake_run, tmp_path)
    assert main(["distill", str(teacher), "--runs-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "s").exists()


def test_a_student_cannot_teach(teacher, tmp_path, capsys):
    run_dir = distill(tiny_student(teacher, tmp_path, name="s"), tmp_path)
    capsys.readouterr()
    assert main(["distill", str(run_dir), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "itself a distilled student" in err and err.count("\n") == 1


def test_a_ddpm_teacher_distills(fake_run, tmp_path):
    run = fake_run("ddpm-class", name="ddpm-teacher")
    run_dir = distill(tiny_student(run, tmp_path, name="s"), tmp_path)
    lab = load_lab_model(run_dir)
    assert lab.kind == "ddpm" and lab.config.distill.teacher_sampler == "dpmpp_2m"
    x = lab.sample([1, 2], guidance_scale=3, steps=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()


def test_the_options_file_of_the_train_page_distills(teacher, tmp_path, capsys):
    """The Train page's request: `distill TEACHER --config FILE`; the pages offer a student its
    flowmap sampler only."""
    from training.config import interactive_sampler, samplers_of, save_options

    options = tiny_student(teacher, tmp_path, name="s")
    save_options(tmp_path / "options.json", options)
    args = ["distill", str(teacher), "--runs-dir", str(tmp_path), "--config"]
    assert main([*args, str(tmp_path / "options.json")]) == 0
    assert read_run(tmp_path / "s").config.options == options
    assert samplers_of(options) == ("flowmap",) and interactive_sampler(options) == ("flowmap", 4)
    other = tiny_student(teacher, tmp_path, name="t")
    save_options(tmp_path / "other.json", other)
    capsys.readouterr()
    assert main(["distill", str(tmp_path / "s"), "--config", str(tmp_path / "other.json")]) == 2
    assert "not the options of a student of" in capsys.readouterr().err


@pytest.mark.parametrize("experiment", ["flow-class", "ddpm-class"])
def test_part_a_tasks_run_on_a_student(fake_run, experiment, tmp_path, capsys):
    """The mnist backend calls a student on its diagonal u(x, t, t) at w = 1 (an ordinary flow or
    DDPM model, guided by the CFG pair): every Part A task runs on it."""
    from samplers.app.cli import main as samplers_main
    from tests.samplers.test_cli import MNIST_TASKS

    run_dir = distill(tiny_student(fake_run(experiment, name="t"), tmp_path, name="s"), tmp_path)
    for task, extra in MNIST_TASKS.items():
        argv = [task, "--backend", "mnist", "--run", str(run_dir), "--steps", "3", *extra]
        assert samplers_main([*argv, "--out", str(tmp_path / task)]) == 0, task
    assert "error" not in capsys.readouterr().err
