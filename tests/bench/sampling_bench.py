"""Sampling 100 class-conditional digits: the lab's sampler against a two-call fp32 loop.

Per-step times are medians over a few steps (interleaved repeats) and scaled to the full step
counts; the sampler's overhead is the loop's time minus the time spent inside the model, both
taken in the same run (a timing wrapper around the UNet).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from training.checkpoints import find_checkpoint, load_weights
from training.config import FAST_SAMPLER, make_options
from training.pretrained import LabModel, build_unet, load_lab_model, vp_alphas_cumprod

from .fastpath import FastPath, applied, prepare
from .report import Row
from .timing import interleaved

SECTION = "sampling 100 digits, guidance 5 (s/step; ratio vs two-call fp32 loop)"
# (sampler, steps) per model kind: the course's full-length sampler first, then the lab's 50-step
# default (the dashboard's) and, for DDPM, DDIM at 50 steps beside it.
SCHEDULES = {
    "ddpm": (("ddpm", 300), FAST_SAMPLER["ddpm"], ("ddim", 50)),
    "flow": (("euler", 300), FAST_SAMPLER["flow"]),
}
GUIDANCE = 5.0


@dataclass(frozen=True)
class SampleSizes:
    steps: int = 4  # sampler steps per timed unit
    repeats: int = 5
    warmup: int = 1
    per_class: int = 10  # 100 digits
    hidden: int = 64


class TimedModel(nn.Module):
    """Wraps a model and adds the wall time spent inside its forward calls to `.seconds`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.seconds = model, 0.0

    def forward(self, *args, **kwargs) -> Tensor:
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        if out.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


def lab_model(
    kind: str, run: Path | None, device: torch.device, hidden: int
) -> tuple[LabModel, str]:
    """The run's model as trained (fp32, BatchNorm unfolded: each FastPath adds its levers) when
    given, else a freshly initialised class-conditional one (speed only)."""
    if run is not None:
        lab = load_lab_model(run, device=device, precision="no")
        unet = build_unet(lab.config).to(device)
        weights_file = find_checkpoint(Path(run), None).weights_file
        unet.load_state_dict(load_weights(weights_file, device, expected=unet.state_dict()))
        return dataclasses.replace(lab, unet=unet.eval()), f"weights of {run}"
    cfg = make_options(f"{kind}-class", hidden=hidden, dataset="mnist-5k")
    torch.manual_seed(0)
    return LabModel(
        cfg, build_unet(cfg).to(device).eval(), vp_alphas_cumprod(cfg).to(device)
    ), "random weights"


@torch.no_grad()
def two_call_loop(lab: LabModel, labels: Tensor, steps: int, generator: torch.Generator) -> Tensor:
    """A course notebook's CFG sampler: conditional and unconditional UNet calls per step, fp32.

    DDPM: algorithm B.2 over `steps` evenly spaced timesteps; flow: Euler from t=0 to t=1.
    """
    unet, cfg = lab.unet, lab.config
    c = torch.nn.functional.one_hot(labels, cfg.num_classes).float()
    null = torch.zeros_like(c)
    x = torch.randn(len(labels), 1, 28, 28, generator=generator, device=labels.device)

    def guided(t: Tensor) -> Tensor:
        out_u, out_c = unet(x, t, null), unet(x, t, c)
        return out_u + GUIDANCE * (out_c - out_u)

    if cfg.kind == "flow":
        for i in range(steps):
            x = x + guided(torch.full((len(labels),), i / steps, device=x.device)) / steps
        return x
    ab, T = lab.alphas_cumprod, cfg.num_timesteps
    ts = [round(T - k * T / steps) - 1 for k in range(steps)] + [-1]
    for t, t_prev in zip(ts[:-1], ts[1:], strict=False):
        eps = guided(torch.full((len(labels),), (t + 1) / T, device=x.device))
        a_t, a_prev = ab[t], ab[t_prev] if t_prev >= 0 else ab.new_tensor(1.0)
        beta = 1 - a_t / a_prev
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * x
        if t_prev >= 0:
            x = x + beta.sqrt() * torch.randn(x.shape, generator=generator, device=x.device)
    return x


class SamplerWork:
    """One timed unit: `lab.sample` of a few steps with a FastPath; records its overhead share."""

    def __init__(
        self,
        lab: LabModel,
        fp: FastPath,
        sampler: str,
        labels: Tensor,
        sizes: SampleSizes,
        device: torch.device,
    ):
        self.timed = TimedModel(prepare(copy.deepcopy(lab.unet), fp))
        self.lab = dataclasses.replace(lab, unet=self.timed)
        self.fp, self.sampler, self.labels, self.sizes, self.device = (
            fp,
            sampler,
            labels,
            sizes,
            device,
        )
        self.generator = torch.Generator(device).manual_seed(0)
        self.overheads: list[float] = []  # (loop - model) / model, one per call

    def __call__(self) -> float:
        self.timed.seconds = 0.0
        start = time.perf_counter()
        with applied(self.fp, self.device, grad=False):
            self.lab.sample(
                self.labels,
                guidance_scale=GUIDANCE,
                sampler=self.sampler,
                steps=self.sizes.steps,
                generator=self.generator,
            )
        wall = time.perf_counter() - start
        self.overheads.append((wall - self.timed.seconds) / self.timed.seconds)
        return wall

    @property
    def overhead(self) -> float:
        """Median overhead share of the timed (post-warm-up) calls."""
        return statistics.median(self.overheads[-self.sizes.repeats :])


def sampling_rows(
    runs: dict[str, Path | None],
    sizes: SampleSizes,
    device: torch.device,
    variants: Sequence[FastPath],
) -> list[Row]:
    """Per kind ("ddpm", "flow"): the two-call loop, then each sampler x variant."""
    rows: list[Row] = []
    labels = torch.arange(10, device=device).repeat(sizes.per_class)
    for kind, run in runs.items():
        lab, source = lab_model(kind, run, device, sizes.hidden)
        gen = torch.Generator(device).manual_seed(0)

        def reference(lab=lab, gen=gen) -> None:
            two_call_loop(lab, labels, sizes.steps, gen)

        samplers = dict.fromkeys(
            s for s, _ in SCHEDULES[kind]
        )  # a step costs the same at any count
        lab_works = {
            (s, fp): SamplerWork(lab, fp, s, labels, sizes, device)
            for s in samplers
            for fp in variants
        }
        t = interleaved(
            {"two-call": reference, **lab_works}, repeats=sizes.repeats, warmup=sizes.warmup
        )
        ref = t["two-call"].median / sizes.steps
        n0 = SCHEDULES[kind][0][1]
        rows.append(
            Row(
                SECTION,
                f"{kind} ({source}): two-call fp32 loop",
                ref,
                "s/step",
                1.0,
                f"{ref * n0:.1f} s for {n0} steps",
            )
        )
        for sampler, n in SCHEDULES[kind]:
            for fp in variants:
                work, per_step = lab_works[sampler, fp], t[sampler, fp].median / sizes.steps
                note = (
                    f"{per_step * n:.1f} s for {n} steps ({ref * n0 / (per_step * n):.1f}x the "
                    f"{n0}-step loop); overhead {work.overhead:.1%} of model time"
                )
                rows.append(
                    Row(
                        SECTION,
                        f"{kind}: lab {sampler} {n} {fp.label}",
                        per_step,
                        "s/step",
                        ref / per_step,
                        note,
                    )
                )
    return rows
