"""A run folder's JSON files or the evaluation classifier's cache damaged by hand or by a crash:
every command says which file in one line (status 2) and changes nothing; a damaged cache is
retrained."""

import shutil

import pytest
from reliability_helpers import train
from safetensors.torch import load_file

from training import cli
from training.classifier import ClassifierConfig, cache_path, load_classifier

TINY_CLASSIFIER = ClassifierConfig(passes=0.05, max_steps=3)
BAD_CONFIGS = {  # the good config.json text -> a damaged one, and the reason the error gives
    "not JSON": (lambda _: '{"experiment": "flow-class",', "not valid JSON"),
    "a list": (lambda _: "[1, 2]", "not a JSON object"),
    "fields missing": (
        lambda _: '{"lr": 0.1}',
        "not a run config (it has no plan)",
    ),
    "a wrong type": (
        lambda t: t.replace('"hidden": 4', '"hidden": "abc"'),
        "'hidden' must be an integer; got \"abc\"",
    ),
    "an unknown kind": (
        lambda t: t.replace('"kind": "flow"', '"kind": "weird"'),
        '\'kind\' must be one of "denoiser", "pure-noise", "ddpm", "flow"; got "weird"',
    ),
    "a value that cannot train": (
        lambda t: t.replace('"hidden": 4', '"hidden": -8'),
        "--hidden must be positive, got -8",
    ),
    "NaN": (
        lambda t: t.replace('"guidance_scale": 5.0', '"guidance_scale": NaN'),
        "--guidance-scale must be a finite number, got nan",
    ),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert train(runs, "good", "--steps", "2") == 0
    return runs / "good"


def commands(run_dir, out):
    return {
        "sample": ["sample", str(run_dir), "--out", str(out)],
        "evaluate": ["evaluate", str(run_dir)],
        "figures": ["figures", str(run_dir)],
        "resume": [
            "flow-class",
            "--runs-dir",
            str(run_dir.parent),
            "--name",
            run_dir.name,
            "--resume",
            "--wandb-mode",
            "disabled",
        ],
    }


def files(run_dir):
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", BAD_CONFIGS)
@pytest.mark.parametrize("command", ["sample", "evaluate", "figures", "resume"])
def test_a_bad_config_json_is_one_line_naming_it(run, tmp_path, capsys, case, command):
    run_dir = tmp_path / "good"
    shutil.copytree(run, run_dir)
    edit, reason = BAD_CONFIGS[case]
    good = (run_dir / "config.json").read_text()
    (run_dir / "config.json").write_text(edit(good))
    assert (run_dir / "config.json").read_text() != good
    before = files(run_dir)
    assert cli.main(commands(run_dir, tmp_path / "x.npz")[command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m training: error: ")
    assert str(run_dir / "config.json") in err and reason in err, err
    assert files(run_dir) == before and not (tmp_path / "x.npz").exists()


def test_a_bad_summary_json_stops_evaluate_before_it_samples(run, tmp_path, capsys, monkeypatch):
    import training.evaluation as ev

    run_dir = tmp_path / "good"
    shutil.copytree(run, run_dir)
    (run_dir / "summary.json").write_text('{"status": "fini')

    def no_sampling(*args, **kwargs):
        raise AssertionError("evaluate sampled although it could not record the result")

    monkeypatch.setattr(ev, "load_classifier", no_sampling)
    assert cli.main(["evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir / 'summary.json'}: not valid JSON" in err


@pytest.mark.parametrize("damage", ["truncated", "not safetensors"])
def test_a_damaged_classifier_cache_is_retrained(tmp_path, damage):
    first = load_classifier("mnist-5k", tmp_path, cfg=TINY_CLASSIFIER)
    path = cache_path(tmp_path, "mnist-5k")
    data = path.read_bytes()
    weights = {k: v.clone() for k, v in load_file(path).items()}  # not a view of the file
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a tensor file")
    again = load_classifier("mnist-5k", tmp_path, cfg=TINY_CLASSIFIER)
    rewritten = load_file(path)  # retrained (seeded: the same weights) and cached again
    assert rewritten.keys() == weights.keys() and all(
        rewritten[k].equal(weights[k]) for k in weights
    )
    assert again.test_accuracy == first.test_accuracy and again.dataset == first.dataset
