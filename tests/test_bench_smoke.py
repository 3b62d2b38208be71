"""Smoke tests of the benchmark (`python -m tests.bench`): every function at tiny sizes, one repeat,
so the code cannot rot. They check the shape of the results, not the speed."""

import json
import re

import pytest
import torch

from samplers.app.devices import resolve_mixed_precision
from tests.bench.__main__ import main, plan
from tests.bench.deepfloyd_bench import IFSizes, deepfloyd_rows
from tests.bench.fastpath import FastPath
from tests.bench.frontier_bench import BUNDLED_RUNS, FrontierSizes, frontier_rows
from tests.bench.peak import count_flops, gemm_peak
from tests.bench.quality import TTQSettings
from tests.bench.report import Row, format_table, write_json
from tests.bench.sampling_bench import SampleSizes, sampling_rows
from tests.bench.timing import interleaved
from tests.bench.training_bench import (
    BareStep,
    TrainSizes,
    experiment_config,
    preview_share_rows,
    training_rows,
)
from training.classifier import ClassifierConfig

CPU = torch.device("cpu")


def test_interleaved_runs_round_robin_and_uses_reported_seconds():
    calls = []
    works = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or 7.0}
    t = interleaved(works, repeats=2, warmup=1)
    assert calls == ["a", "b"] * 3
    assert t["b"].seconds == (7.0, 7.0) and t["b"].median == 7.0 and len(t["a"].seconds) == 2
    with pytest.raises(ValueError, match="repeats"):
        interleaved(works, repeats=0)


def test_flop_count_and_gemm_peak():
    lin = torch.nn.Linear(16, 8, bias=False)
    assert count_flops(lambda: lin(torch.randn(4, 16))) == 2 * 4 * 16 * 8
    peak = gemm_peak(CPU, n=64, repeats=1)
    assert set(peak) == {"matmul", "1x1 conv"}
    assert all(set(v) == {"fp32", "bf16"} and min(v.values()) > 0 for v in peak.values())


def test_training_rows_compare_reference_trainer_and_variants():
    rows = training_rows(
        TrainSizes(steps=1, repeats=1, warmup=0, hidden=8, batch=8),
        CPU,
        [FastPath(), FastPath(channels_last=True, fused_adam=True)],
        peaks={"fp32": 10.0, "bf16": 20.0},
        bare=[FastPath(channels_last=True)],
        experiments=("flow-class",),
    )
    names = [r.name for r in rows]
    assert len(rows) == 5 and "reference loop" in names[0] and "Trainer" in names[1]
    assert "fused Adam" in names[3] and names[4].split(": ")[1].startswith("bare channels_last")
    assert rows[0].ratio == 1.0 and all(r.value > 0 and "GFLOP/s" in r.note for r in rows)
    assert all("of fp32 peak" in r.note and "of bf16 peak" in r.note for r in rows)


@pytest.mark.cuda
def test_bare_step_replayed_as_a_cuda_graph_trains_like_the_eager_step():
    cuda = torch.device("cuda")
    cfg = experiment_config("flow-class", TrainSizes(hidden=8, batch=16), cuda)
    eager, graphed = (
        BareStep(cfg, cuda, FastPath(channels_last=True, fused_adam=True, cuda_graph=graph))
        for graph in (False, True)
    )
    for _ in range(3):  # capturing took three eager warm-up steps: match them, then replay five
        eager.step()
    for _ in range(5):
        eager.step()
        graphed.step()
    torch.cuda.synchronize()
    first = next(eager.model.parameters()).detach().clone()
    for a, b in zip(
        eager.model.state_dict().values(), graphed.model.state_dict().values(), strict=False
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    eager.step()  # the comparison can fail: one more step moves the weights
    assert not torch.allclose(next(eager.model.parameters()), first)


def test_preview_share_rows_project_a_full_fast_run():
    rows = preview_share_rows(CPU, steps=1, experiments=("ddpm-class",))
    assert len(rows) == 1 and 0 < rows[0].value < 100 and "preview" in rows[0].note


def test_sampling_rows_time_both_kinds_and_overhead():
    rows = sampling_rows(
        {"ddpm": None, "flow": None},
        SampleSizes(steps=1, repeats=1, warmup=0, per_class=1, hidden=8),
        CPU,
        [FastPath(channels_last=True, inference_mode=True)],
    )
    assert len(rows) == 7  # per kind: two-call loop + its (sampler, steps) schedules
    assert [r.name.split(":")[1].split()[1:3] for r in rows if "lab" in r.name] == [
        ["ddpm", "300"],
        ["ddpm", "50"],
        ["ddim", "50"],
        ["euler", "300"],
        ["heun", "50"],
    ]
    assert all(r.value > 0 and r.ratio > 0 for r in rows)
    assert all("overhead" in r.note for r in rows if "lab" in r.name)


def test_deepfloyd_rows_batched_and_unbatched():
    rows = deepfloyd_rows(IFSizes(image=16, batch=1, steps=1, repeats=1, warmup=0))
    assert rows[0].name.startswith("IF step, unbatched") and rows[1].ratio > 0
    assert rows[2].value > 0
    assert "cache hit" in rows[3].name and rows[3].value > 0 and rows[3].ratio > 0


def test_time_to_quality_scores_each_kind_with_its_50_step_sampler():
    assert TTQSettings("flow-class").scorer == ("heun", 50)
    assert TTQSettings("ddpm-class", recipe="fast").scorer == ("ddpm", 50)


def test_table_json_and_plans(tmp_path):
    rows = [Row("s", "a", 1.5, "img/s", 1.0, "n"), Row("s", "b", None, "s", None, "skipped")]
    assert "skipped" in format_table(rows)
    doc = json.loads(
        write_json(rows, tmp_path / "x" / "r.json", settings={"mode": "t"}).read_text()
    )
    assert (
        doc["rows"][0]["value"] == 1.5
        and doc["machine"]["cores"]
        and doc["settings"]["mode"] == "t"
    )
    quick, full = plan(True, CPU), plan(False, CPU)
    assert quick.train_variants[0] == FastPath() and any(v.compile for v in full.train_variants)
    assert all(any(v.fold_bn for v in p.sample_variants) for p in (quick, full))  # the lab's own
    with pytest.raises(SystemExit):
        main(["--sections", "nope"])


def test_command_rows_time_the_real_sample_command_against_the_reference():
    from tests.bench.__main__ import COMMAND_RUN
    from tests.bench.command_bench import command_rows

    rows = command_rows(COMMAND_RUN, per_class=1)
    assert [r.ratio for r in rows][0] == 1.0 and all(r.value > 0 for r in rows)
    assert "python -m training sample" in rows[1].name
    differing = int(re.search(r"(\d+) pixels differ", rows[1].note)[1])
    if resolve_mixed_precision("auto", CPU) == "no":
        assert differing == 0  # chunking changes float rounding, not the images
    else:  # the lab samples in bf16 here: rounding moves a few pixels, not the digits
        assert differing < 0.05 * 10 * 28 * 28


def test_frontier_rows_give_each_sampler_its_fewest_steps_at_the_default_quality(tmp_path):
    tiny = ClassifierConfig(width=4, feature_dim=16, passes=0.05, max_steps=3, batch_size=64)
    sizes = FrontierSizes(steps=(1, 2), per_class=1)
    rows = frontier_rows(BUNDLED_RUNS[0], sizes, runs_dir=tmp_path, classifier_config=tiny)
    assert rows[0].name == "flow-class-d32: heun 50 (the run's default), NFE 200"
    assert rows[0].ratio == 1.0 and rows[0].value > 0
    assert [r.name.split(": ")[1].split()[0].rstrip(",") for r in rows[1:]] == [
        "euler",
        "heun",
        "dpmpp_2m",
        "ddpm",
        "ddim",
    ]
    heun = rows[2]  # the default itself is always at its own quality: a row with a time
    assert heun.value > 0 and heun.name.split(", NFE ")[1] in ("4", "8", "200")
    for r in rows[1:]:
        assert (r.value is None and "not at the default's quality" in r.note) or (
            r.value > 0 and r.ratio > 0 and "steps tried 1, 2" in r.note
        )


def test_student_rows_time_the_student_against_its_teachers_default(tmp_path):
    from tests.bench.student_bench import BUNDLED_STUDENTS, StudentSizes, student_rows

    tiny = ClassifierConfig(width=4, feature_dim=16, passes=0.05, max_steps=3, batch_size=64)
    sizes = StudentSizes(steps=(1, 4), per_class=1)
    rows = student_rows(BUNDLED_STUDENTS[0], sizes, runs_dir=tmp_path, classifier_config=tiny)
    assert [r.name for r in rows] == [
        "flow-class-d32: heun 50, NFE 200",
        "flow-class-d32-student: flowmap 1, NFE 1",
        "flow-class-d32-student: flowmap 4, NFE 4",
    ]
    assert rows[0].ratio == 1.0 and all(r.value > 0 and r.ratio > 0 for r in rows)
