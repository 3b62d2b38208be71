"""The sampler table: every sampler of the core by name, the schedules it walks, its cost.

Torch-free, so a command line can list the samplers before torch loads; an entry's `function`
imports `samplers.sampling` (and torch) when first asked for.

A "vp" schedule is walked with a noise model, model(x, t: int) -> noise (B, C, H, W) or noise
+ variance (B, 2C, H, W); a "flow" schedule with a velocity model, model(x, t: (B,) float) ->
data - noise. (A velocity model also walks the "vp" samplers through
`parameterization.VelocityAsEps`.) A "flowmap" schedule is walked with a distilled student,
model(x, t, s) -> the average velocity from t to s ((B,) floats in [0, 1]), which takes the
guidance scale as an input: one call a step at any scale, no classifier-free guidance pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

if TYPE_CHECKING:
    from .sampling import Sampler

ScheduleKind = Literal["vp", "flow", "flowmap"]
Guidance = Literal["pair", "input"]


@dataclass(frozen=True)
class SamplerSpec:
    """One row of the table: sample_`name` walks schedules of `kinds` with `evals_per_step`
    model calls per step (a step: one pair of consecutive schedule times). `guidance`: "pair"
    when classifier-free guidance doubles each call (a conditional + unconditional pair), "input"
    when the model takes the scale as an input (a distilled student: no pair)."""

    name: str
    kinds: tuple[ScheduleKind, ...]
    evals_per_step: int
    guidance: Guidance = "pair"

    @property
    def function(self) -> Sampler:
        """samplers.sampling.sample_`name`."""
        from . import sampling

        return cast("Sampler", getattr(sampling, f"sample_{self.name}"))


SAMPLER_TABLE: tuple[SamplerSpec, ...] = (
    SamplerSpec("ddpm", ("vp",), 1),
    SamplerSpec("ddim", ("vp",), 1),
    SamplerSpec("euler", ("flow",), 1),
    SamplerSpec("heun", ("flow",), 2),
    SamplerSpec("dpmpp_2m", ("vp", "flow"), 1),
    SamplerSpec("flowmap", ("flowmap",), 1, guidance="input"),
)
SAMPLER_NAMES: tuple[str, ...] = tuple(spec.name for spec in SAMPLER_TABLE)


def samplers_for(kind: ScheduleKind) -> tuple[str, ...]:
    """Names of the samplers that walk `kind` schedules, in table order."""
    return tuple(spec.name for spec in SAMPLER_TABLE if kind in spec.kinds)


def sampler_spec(name: str, kind: ScheduleKind | None = None) -> SamplerSpec:
    """The table's entry `name`; with `kind`, only if it walks that kind of schedule.

    Raises ValueError naming the choices for an unknown name or a sampler of the other kind.
    """
    spec = next((s for s in SAMPLER_TABLE if s.name == name), None)
    if spec is None:
        choices = SAMPLER_NAMES if kind is None else samplers_for(kind)
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(choices)}")
    if kind is not None and kind not in spec.kinds:
        model = {
            "vp": "noise (vp)",
            "flow": "velocity (flow)",
            "flowmap": "average velocity (a distilled student, flowmap)",
        }[kind]
        raise ValueError(
            f"sampler {name!r} walks {' and '.join(spec.kinds)} schedules only; for a model that "
            f"predicts {model} choose from {', '.join(samplers_for(kind))}"
        )
    return spec


def get_sampler(name: str) -> Sampler:
    """The sampler function `name` (ValueError if unknown)."""
    return sampler_spec(name).function


def nfe(name: str, steps: int, guided: bool = False) -> int:
    """Model evaluations per image of sampler `name` over `steps` steps; `guided`: with
    classifier-free guidance, which doubles each call of a "pair" sampler (a CFG pair counts 2)
    and none of an "input" one (flowmap: the student takes the scale as an input)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    spec = sampler_spec(name)
    return spec.evals_per_step * steps * (2 if guided and spec.guidance == "pair" else 1)
