"""training.jsontypes: dataclasses read back from JSON, checked against their type hints."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from training.jsontypes import JSONTypeError, describe, from_json


@dataclass(frozen=True)
class Scores:
    per_class: int
    frechet: dict[str, float | None]
    sampler: Literal["ddpm", "heun"] = "ddpm"


@dataclass(frozen=True)
class Record:
    name: str
    dataset: Literal["mnist", "mnist-5k"]
    lr: float
    scheduler: bool
    milestones: tuple[int, ...] = (1, 5)
    wandb_mode: Literal["online", "offline"] | None = None
    evaluation: Scores | None = None
    tags: list[str] = field(default_factory=list)
    extra: Any = None
    where: Path = Path(".")
    size: tuple[int, int] = (28, 28)
    rows: list = field(default_factory=list)


RECORD = Record(
    "run",
    "mnist-5k",
    0.01,
    True,
    (1, 5, 10),
    "offline",
    Scores(50, {"1": 21.2, "none": None}, "heun"),
    ["a", "b"],
    {"free": [1, "x"]},
    Path("runs/x"),
    (32, 32),
    [1, "x", None],
)


WRITTEN = json.loads(json.dumps(asdict(RECORD), default=str))  # RECORD as a JSON file holds it


def test_what_asdict_wrote_reads_back_equal():
    assert from_json(Record, WRITTEN) == RECORD
    minimal = from_json(Record, {"name": "r", "dataset": "mnist", "lr": 1, "scheduler": False})
    assert minimal == Record("r", "mnist", 1.0, False) and isinstance(minimal.lr, float)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"dataset": ["x"]},
            'config.json: \'dataset\' must be one of "mnist", "mnist-5k"; got ["x"]',
        ),
        ({"lr": "0.1"}, "config.json: 'lr' must be a number; got \"0.1\""),
        ({"lr": True}, "config.json: 'lr' must be a number; got true"),
        ({"scheduler": 1}, "config.json: 'scheduler' must be true or false; got 1"),
        ({"milestones": [1, "5"]}, "config.json: 'milestones[1]' must be an integer; got \"5\""),
        ({"milestones": 5}, "config.json: 'milestones' must be a list of integers; got 5"),
        (
            {"wandb_mode": "loud"},
            'config.json: \'wandb_mode\' must be one of "online", "offline" or null; got "loud"',
        ),
        (
            {"evaluation": {"per_class": 2.5, "frechet": {}}},
            "config.json: 'evaluation.per_class' must be an integer; got 2.5",
        ),
        (
            {"evaluation": {"per_class": 2, "frechet": {"1": "x"}}},
            "config.json: 'evaluation.frechet.1' must be a number or null; got \"x\"",
        ),
        ({"evaluation": {"per_class": 2}}, "config.json: 'evaluation.frechet' is missing"),
        ({"evaluation": 3}, "config.json: 'evaluation' must be a JSON object or null; got 3"),
        ({"lr": None}, "config.json: 'lr' must be a number; got null"),
        ({"where": 3}, "config.json: 'where' must be a path (a string); got 3"),
        ({"size": [1, 2, 3]}, "config.json: 'size' must be a list of 2 items; got [1, 2, 3]"),
        ({"size": [1, "2"]}, "config.json: 'size[1]' must be an integer; got \"2\""),
        ({"rows": {}}, "config.json: 'rows' must be a list; got {}"),
        ({"colour": "red"}, "config.json: 'colour' is not a field of Record"),
    ],
)
def test_a_mismatch_is_one_line_naming_the_field(change, message):
    data = {**WRITTEN, **change}
    with pytest.raises(JSONTypeError) as e:
        from_json(Record, data, "config.json")
    assert str(e.value) == message


def test_missing_fields_unknown_keys_and_non_objects():
    with pytest.raises(JSONTypeError, match=r"^summary.json: 'scheduler' is missing$"):
        from_json(Record, {"name": "r", "dataset": "mnist", "lr": 1.0}, "summary.json")
    with pytest.raises(JSONTypeError, match=r"^x: must be a JSON object; got \[1, 2\]$"):
        from_json(Record, [1, 2], "x")
    with pytest.raises(JSONTypeError, match=r"^must be a JSON object; got \[\]$"):
        from_json(Record, [])  # no source: the caller names the file
    data = {**WRITTEN, "written_by_a_newer_version": 1}
    assert from_json(Record, data, unknown="ignore") == RECORD
    with pytest.raises(JSONTypeError, match=r"^f: 'plan.per_class' is missing$"):
        from_json(Scores, {"frechet": {}}, "f", path="plan")  # an object inside a file


def test_hints_it_cannot_check_are_a_programming_error():
    @dataclass
    class Pair:
        xy: set[int]

    with pytest.raises(TypeError, match="cannot check"):
        from_json(Pair, {"xy": [1, 2]})
    assert describe(int | None) == "an integer or null"
