"""The DeepFloyd IF path on the tiny offline pipeline (tests.fixtures.tiny_if) loaded by the
lab's real DeepFloydBackend: batched vs unbatched CFG, T5 encoding vs an embedding-cache hit.

The UNet and T5 encoder are tiny random models with IF's structure (a 6-channel output: noise +
learned-range variance; T5 encoder states as cross-attention context), so the figures show the
sampler-side costs (batching, overhead, the cache), not IF's real speed.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import samplers
from samplers.app.backends import load_backend
from tests.fixtures.tiny_if import build_tiny_if

from .report import Row
from .timing import interleaved

SECTION = "DeepFloyd path, tiny offline IF (s; ratio vs unbatched / vs T5)"
GUIDANCE = 7.0
PROMPT = "an oil painting of a snowy mountain village"


@dataclass(frozen=True)
class IFSizes:
    image: int = 32  # IF stage 1 is 64
    batch: int = 4
    steps: int = 3  # sampler steps per timed unit
    repeats: int = 5
    warmup: int = 1


@torch.no_grad()
def unbatched_cfg(model, x: Tensor, timesteps, ab: Tensor, cond: Tensor, uncond: Tensor) -> Tensor:
    """Two model calls a step (conditional, unconditional), noise guided, variance conditional."""
    for t, t_prev in zip(timesteps[:-1], timesteps[1:], strict=False):
        out_c, out_u = model(x, t, cond), model(x, t, uncond)
        eps = out_u[:, :3] + GUIDANCE * (out_c[:, :3] - out_u[:, :3])
        x = samplers.ddpm_step(x, eps, t, t_prev, ab, out_c[:, 3:])
    return x


def deepfloyd_rows(sizes: IFSizes) -> list[Row]:
    """Per-step time batched vs unbatched CFG; a new prompt (T5 loaded and run, cache written) vs
    a cached one (EmbeddingCache hit), through DeepFloydBackend.encode."""
    with tempfile.TemporaryDirectory(prefix="tiny-if-bench-") as tmp:
        tiny = build_tiny_if(Path(tmp) / "model", image_size=sizes.image)
        backend = load_backend(
            "deepfloyd",
            model=str(tiny.stage1),
            stage2=None,
            device="cpu",
            dtype=torch.float32,
            cache_dir=Path(tmp) / "cache",
        )
        ab, ts = backend.alphas_cumprod, backend.timesteps[: sizes.steps + 1]
        x = torch.randn(sizes.batch, backend.channels, sizes.image, sizes.image)
        cond = backend.encode([PROMPT]).expand(sizes.batch, -1, -1)
        uncond = backend.encode([""]).expand(sizes.batch, -1, -1)
        fresh = (f"{PROMPT} {i}" for i in itertools.count())

        def batched() -> None:
            samplers.sample_ddpm(
                samplers.Guided(backend, cond, uncond, GUIDANCE), x, samplers.Schedule.vp(ab, ts)
            )

        def unbatched() -> None:
            unbatched_cfg(backend, x, ts, ab, cond, uncond)

        def new_prompt() -> None:
            backend.encode([next(fresh)])

        def cached_prompt() -> None:
            backend.encode([PROMPT])

        works = {"unbatched": unbatched, "batched": batched, "t5": new_prompt, "hit": cached_prompt}
        t = interleaved(works, repeats=sizes.repeats, warmup=sizes.warmup)
    per = {k: t[k].median / sizes.steps for k in ("unbatched", "batched")}
    shape = f"batch {sizes.batch}, {sizes.image}x{sizes.image}"
    return [
        Row(SECTION, f"IF step, unbatched CFG (2 calls), {shape}", per["unbatched"], "s/step", 1.0),
        Row(
            SECTION,
            f"IF step, batched CFG (sample_ddpm + Guided), {shape}",
            per["batched"],
            "s/step",
            per["unbatched"] / per["batched"],
        ),
        Row(SECTION, "prompt: new, tiny T5 loaded + encoded", t["t5"].median, "s", 1.0),
        Row(
            SECTION,
            "prompt: embedding-cache hit",
            t["hit"].median,
            "s",
            t["t5"].median / t["hit"].median,
        ),
    ]
