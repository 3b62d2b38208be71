"""A run's evaluation results, typed: `evaluation.json` in the run folder (docs/run-record.md).

    {"format": 1, "floors": [FrechetFloor, ...], "cells": [EvaluationCell, ...]}

A cell is one (checkpoint, sampler, steps, guidance, sample count) scored; a floor is the
real-vs-real Fréchet distance for one dataset and sample count. `record_evaluation` merges new
cells and floors by key (a later sweep adds or replaces cells, never drops others) and writes the
file atomically. `read_evaluation` is the one reader: it also reads the results that earlier
versions of the lab stored in summary.json["evaluation"] (evaluation.json wins on equal keys).
The run folder is untrusted input: an entry of the wrong type or size is left out with a
one-line problem naming the file and field (`RunEvaluation.problems`), never an exception.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import samplers
from samplers.app.files import write_text_atomic

from .config import SAMPLERS
from .runs import RunFileError, read_summary

FILE = "evaluation.json"
FORMAT = 1
MAX_BYTES = 4 << 20  # a file larger than this is not one the lab wrote
MAX_ENTRIES = 10_000  # cells or floors
MAX_TEXT = 64  # characters of a text field


def nfe(sampler: str, steps: int, guidance: float | None) -> int:
    """Model evaluations per image: the sampler table's count for `steps` steps ("direct", a
    single-step denoiser: one call), doubled for a classifier-free guidance pair (a class model
    at any scale but 1; `guidance` None = an unconditional model) except for a student's
    flowmap, which takes the scale as an input. ValueError for a sampler
    the table does not know."""
    guided = guidance is not None and guidance != 1
    if sampler == "direct":
        return 2 if guided else 1
    return samplers.nfe(sampler, steps, guided)


def _bounded(lo: float | None = None, hi: float | None = None, **kwargs: Any) -> Any:
    return field(metadata={"range": (lo, hi)}, **kwargs)


@dataclass(frozen=True)
class FrechetFloor:
    """The real-vs-real Fréchet distance of `per_class` real train digits a class to the test
    split: the mean (and sd) of `draws` seeded draws, what a perfect model scores with as many
    samples."""

    dataset: str
    per_class: int = _bounded(1, 1_000_000)
    draws: int = _bounded(1, 100_000)  # 1 in results stored before the floor was a mean
    mean: float = _bounded(0)
    sd: float | None = _bounded(0)  # None for one draw
    seed: int = _bounded()
    classifier_test_accuracy: float = _bounded(0, 1)

    @property
    def key(self) -> tuple[str, int]:
        return (self.dataset, self.per_class)


@dataclass(frozen=True)
class EvaluationCell:
    """One scored setting: `per_class` samples of each class (or 10 x `per_class` unconditional
    ones, `guidance` None), drawn `repeats` times (seeds seed, seed + 1, ...); accuracy (None
    for unconditional samples) and Fréchet distance are the repeats' means, `frechet_sd` their
    sd (None for one). `nfe`: model evaluations per image. `seconds_per_1000`: measured wall
    time of the sampling per 1,000 images on `device` (None in results stored before it was)."""

    checkpoint: str | None
    sampler: str
    steps: int = _bounded(1, 1_000_000)
    nfe: int = _bounded(1, 10_000_000)
    guidance: float | None = _bounded()
    per_class: int = _bounded(1, 1_000_000)
    repeats: int = _bounded(1, 100_000)
    seed: int = _bounded()
    precision: str | None  # the UNet's autocast: "no" (fp32), "bf16", "fp16"; None: not stored
    dataset: str
    accuracy: float | None = _bounded(0, 1)
    frechet: float = _bounded(0)
    frechet_sd: float | None = _bounded(0)
    seconds_per_1000: float | None = _bounded(0, default=None)
    device: str | None = None
    evaluated: str | None = None  # when: ISO 8601, UTC

    @property
    def key(self) -> tuple[str | None, str, int, float | None, int]:
        """What a later result replaces: the same checkpoint, sampler, steps, guidance and
        sample count."""
        return (self.checkpoint, self.sampler, self.steps, self.guidance, self.per_class)

    @property
    def setting(self) -> tuple[str | None, str, int, int]:
        """(checkpoint, sampler, steps, per_class): the cells of one guidance sweep share it."""
        return (self.checkpoint, self.sampler, self.steps, self.per_class)


@dataclass(frozen=True)
class RunEvaluation:
    """A run's evaluation results, and what could not be read of them (one line each)."""

    cells: tuple[EvaluationCell, ...] = ()
    floors: tuple[FrechetFloor, ...] = ()
    problems: tuple[str, ...] = ()

    def floor(self, cell: EvaluationCell) -> FrechetFloor | None:
        """The floor for a cell's dataset and sample count, if one was stored."""
        return next((f for f in self.floors if f.key == (cell.dataset, cell.per_class)), None)

    def ratio(self, cell: EvaluationCell) -> float | None:
        """The cell's Fréchet distance over its floor's mean (None without a floor)."""
        floor = self.floor(cell)
        return cell.frechet / floor.mean if floor is not None and floor.mean > 0 else None

    def latest(self) -> tuple[EvaluationCell, ...]:
        """The cells of the most recently evaluated setting (EvaluationCell.setting), by
        guidance; results stored without a time count as the oldest."""
        if not self.cells:
            return ()
        newest = max(enumerate(self.cells), key=lambda ic: (ic[1].evaluated or "", ic[0]))[1]
        same = [c for c in self.cells if c.setting == newest.setting]
        return tuple(sorted(same, key=lambda c: -1.0 if c.guidance is None else c.guidance))

    def merged(self, newer: RunEvaluation) -> RunEvaluation:
        """These results with `newer`'s added, a newer cell or floor replacing one of its key."""
        cells = {c.key: c for c in self.cells} | {c.key: c for c in newer.cells}
        floors = {f.key: f for f in self.floors} | {f.key: f for f in newer.floors}
        return RunEvaluation(
            tuple(cells.values()), tuple(floors.values()), self.problems + newer.problems
        )

    def to_json(self) -> dict[str, Any]:
        """evaluation.json's content (problems are not stored)."""
        return {
            "format": FORMAT,
            "floors": [asdict(f) for f in self.floors],
            "cells": [asdict(c) for c in self.cells],
        }


# ----------------------------------------------------------------------------- validation
def _describe(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"the text {value[:20]!r}" + ("..." if len(value) > 20 else "")
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _expected(base: type, lo: float | None, hi: float | None, optional: bool) -> str:
    what = {int: "an integer", float: "a number", str: f"a text of 1 to {MAX_TEXT} characters"}
    text = what[base]
    if lo is not None and hi is not None:
        text += f" in [{lo:,}, {hi:,}]"
    elif lo is not None:
        text += f" >= {lo:,}"
    return text + (" or null" if optional else "")


def _check(value: Any, hint: Any, bounds: tuple[float | None, float | None]) -> tuple[Any, str]:
    """(the value, "") when a JSON value fits a field's type and range, else (None, problem)."""
    arms = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    optional, base = NoneType in arms, next(a for a in arms if a is not NoneType)
    lo, hi = bounds
    if value is None and optional:
        return None, ""
    ok = False
    if base is str:
        ok = isinstance(value, str) and 0 < len(value) <= MAX_TEXT and value.isprintable()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ok = (base is float or isinstance(value, int)) and math.isfinite(value)
        ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
        value = float(value) if base is float else value
    if ok:
        return value, ""
    return None, f"is {_describe(value)}; expected {_expected(base, lo, hi, optional)}"


def _parse(cls: type, raw: Any, where: str) -> tuple[Any, str]:
    """(an instance of the dataclass `cls`, "") from its JSON object, else (None, problem)."""
    if not isinstance(raw, dict):
        return None, f"{where}: is {_describe(raw)}; expected an object"
    hints, values = get_type_hints(cls), {}
    for f in fields(cls):
        if f.name not in raw:
            if f.default is MISSING:
                return None, f"{where}: {f.name} is missing"
            values[f.name] = f.default
            continue
        value, problem = _check(raw[f.name], hints[f.name], f.metadata.get("range", (None, None)))
        if problem:
            return None, f"{where}: {f.name} {problem}"
        values[f.name] = value
    if cls is EvaluationCell and values["sampler"] not in SAMPLERS:
        return None, f"{where}: sampler {values['sampler']!r} is not one the lab knows"
    return cls(**values), ""


def _parse_all(cls: type, raws: Iterable[tuple[str, Any]]) -> tuple[list[Any], list[str]]:
    parsed, problems = [], []
    for where, raw in raws:
        obj, problem = _parse(cls, raw, where)
        if problem:
            problems.append(problem)
        else:
            parsed.append(obj)
    return parsed, problems


# ----------------------------------------------------------------------------- reading
def _read_file(path: Path) -> tuple[Any, str]:
    """(the parsed JSON of a plain file, "") or (None, problem); a missing file is ({}, "")."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return {}, ""
    except OSError as e:
        return None, f"{path}: cannot be read ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return None, f"{path}: is not a plain file (a link, folder or device); the lab writes one"
    if st.st_size > MAX_BYTES:
        return None, f"{path}: is {st.st_size:,} bytes; results the lab writes stay under 4 MiB"
    try:
        return json.loads(path.read_bytes()[:MAX_BYTES]), ""
    except OSError as e:
        return None, f"{path}: cannot be read ({e.strerror})"
    except ValueError as e:
        return None, f"{path}: not valid JSON ({e})"


def _entries(doc: dict[str, Any], name: str, where: str) -> tuple[list[tuple[str, Any]], str]:
    items = doc.get(name, [])
    if not isinstance(items, list):
        return [], f"{where}: {name} is {_describe(items)}; expected a list"
    if len(items) > MAX_ENTRIES:
        return [], f"{where}: {len(items):,} {name}; more than the {MAX_ENTRIES:,} the lab keeps"
    return [(f"{where}: {name[:-1]} {i}", item) for i, item in enumerate(items)], ""


def read_stored(run_dir: str | Path) -> RunEvaluation:
    """evaluation.json of a run (empty when absent), validated."""
    path = Path(run_dir) / FILE
    doc, problem = _read_file(path)
    if problem:
        return RunEvaluation(problems=(problem,))
    if not isinstance(doc, dict):
        return RunEvaluation(problems=(f"{path}: is {_describe(doc)}; expected an object",))
    if doc and doc.get("format") != FORMAT:
        return RunEvaluation(
            problems=(f"{path}: format {_describe(doc.get('format'))}; this lab reads {FORMAT}",)
        )
    problems = []
    parts = {}
    for name, cls in (("floors", FrechetFloor), ("cells", EvaluationCell)):
        entries, problem = _entries(doc, name, str(path))
        parsed, more = _parse_all(cls, entries)
        parts[name] = tuple(parsed)
        problems += [problem] * bool(problem) + more
    return RunEvaluation(parts["cells"], parts["floors"], tuple(problems))


def _legacy(ev: Any, where: str) -> RunEvaluation:
    """The results an earlier lab stored in summary.json["evaluation"]: a dict of guidance key
    ("0", "5", or "none" for an unconditional model) -> score, with one floor."""
    if not isinstance(ev, dict):
        return RunEvaluation(problems=(f"{where}: is {_describe(ev)}; expected an object",))
    by_key = {}
    for name in ("frechet", "accuracy", "frechet_sd"):
        value = ev.get(name, {})
        if not isinstance(value, dict) or len(value) > MAX_ENTRIES:
            problem = f"{where}: {name} is {_describe(value)}; expected guidance -> value"
            return RunEvaluation(problems=(problem,))
        by_key[name] = value
    common = {k: ev.get(k) for k in ("checkpoint", "sampler", "steps", "seed", "precision")}
    common |= {"per_class": ev.get("per_class"), "repeats": ev.get("repeats", 1)}
    common |= {"dataset": ev.get("dataset"), "nfe": 1}  # nfe: set once the rest is valid
    raws = []
    for key, fd in by_key["frechet"].items():
        try:
            guidance = None if key == "none" else float(key)
        except ValueError:
            guidance = key  # reported as a wrong type below
        raws.append(
            (
                f"{where}: guidance {key[:20]!r}",
                common
                | {
                    "guidance": guidance,
                    "frechet": fd,
                    "accuracy": by_key["accuracy"].get(key),
                    "frechet_sd": by_key["frechet_sd"].get(key),
                },
            )
        )
    cells, problems = _parse_all(EvaluationCell, raws)
    cells = [replace(c, nfe=nfe(c.sampler, c.steps, c.guidance)) for c in cells]
    floor_raw = {
        "dataset": ev.get("dataset"),
        "per_class": ev.get("per_class"),
        "draws": ev.get("frechet_floor_draws", 1),
        "mean": ev.get("frechet_floor"),
        "sd": ev.get("frechet_floor_sd"),
        "seed": ev.get("seed"),
        "classifier_test_accuracy": ev.get("classifier_test_accuracy"),
    }
    floors, more = _parse_all(FrechetFloor, [(f"{where}: floor", floor_raw)])
    return RunEvaluation(tuple(cells), tuple(floors), tuple(problems + more))


def read_evaluation(run_dir: str | Path) -> RunEvaluation:
    """Every evaluation result of a run: summary.json["evaluation"] as earlier labs stored it,
    then evaluation.json over it. Never raises for what the files hold (see `problems`)."""
    run_dir = Path(run_dir)
    try:
        legacy = read_summary(run_dir).get("evaluation")
    except (RunFileError, OSError) as e:
        old = RunEvaluation(problems=(str(e).splitlines()[0] if str(e) else repr(e),))
    else:
        where = f"{run_dir / 'summary.json'}: evaluation"
        old = RunEvaluation() if legacy is None else _legacy(legacy, where)
    return old.merged(read_stored(run_dir))


# ----------------------------------------------------------------------------- writing
def check_recordable(run_dir: str | Path) -> None:
    """RunFileError (one line, naming the file) when results could not be recorded in the run
    without losing what it holds: a summary.json or evaluation.json that does not read."""
    read_summary(run_dir)
    problems = read_stored(run_dir).problems
    if problems:
        raise RunFileError(f"{problems[0]} (fix or remove the file; nothing was changed)")


def record_evaluation(
    run_dir: str | Path,
    cells: Iterable[EvaluationCell] = (),
    floors: Iterable[FrechetFloor] = (),
) -> RunEvaluation:
    """Merge `cells` and `floors` into the run's evaluation.json (atomically); returns what the
    file now holds. RunFileError when the stored file does not read (it is left as it is)."""
    path = Path(run_dir) / FILE
    stored = read_stored(run_dir)
    if stored.problems:
        raise RunFileError(f"{stored.problems[0]} (fix or remove the file; nothing was changed)")
    merged = stored.merged(RunEvaluation(tuple(cells), tuple(floors)))
    write_text_atomic(path, json.dumps(merged.to_json(), indent=1, allow_nan=False) + "\n")
    return merged
