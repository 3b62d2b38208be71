"""`MnistBackend`: the samplers Backend protocol (samplers/backends/base.py) on a lab MNIST model.

So every Part A algorithm (SDEdit, inpainting, anagrams, hybrids...) runs on the lab's own DDPM or
flow models: x (B, 1, 28, 28) in the VP space of the run's schedule (T = 300), t an int timestep,
cond a (B, 10) one-hot ("" = the zero row) or None. Flow models answer through VelocityAsEps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

import samplers

from .data import DatasetUnavailableError, load_dataset, to_signed
from .pretrained import LabModel, load_lab_model

DEFAULT_STEPS = 30  # the default spaced schedule: quick Part A tricks on a laptop


class MnistBackend:
    """A lab run (DDPM or flow) as a samplers backend; `checkpoint` as in load_lab_model."""

    name = "mnist"
    image_size = 28
    channels = 1
    default_prompt = ""
    prompts = ("", *map(str, range(10)))
    can_upsample = False

    def __init__(
        self,
        run_dir: str | Path | None = None,
        checkpoint: int | str | None = None,
        device: str | torch.device = "cpu",
        num_steps: int = DEFAULT_STEPS,
        *,
        lab: LabModel | None = None,
    ):
        """`lab`: an already loaded model of the run (then run_dir, checkpoint, device unused)."""
        self.lab = lab if lab is not None else load_lab_model(run_dir, checkpoint, device)
        if self.lab.kind not in ("ddpm", "flow"):
            raise ValueError(
                f"{self.lab.checkpoint}: a {self.lab.kind} model is not a diffusion model; "
                "the mnist backend needs a ddpm-* or flow-* run"
            )
        self.device = self.lab.device
        self.default_guidance_scale = self.lab.config.guidance_scale  # the run's (course: 5)
        self.dtype = torch.float32
        self.alphas_cumprod = self.lab.alphas_cumprod
        self.timesteps = samplers.spaced_timesteps(self.lab.config.num_timesteps, num_steps)
        self._eps = (
            samplers.VelocityAsEps(self.lab.velocity_model, self.alphas_cumprod)
            if self.lab.kind == "flow"
            else self.lab.eps_model
        )

    @torch.no_grad()
    def __call__(self, x: Tensor, t: int | Tensor, cond: Tensor | None) -> Tensor:
        """eps (B, 1, 28, 28) for x (B, 1, 28, 28) at int timestep(s) t."""
        return self._eps(x, t, cond if self.lab.class_conditional else None)

    def encode(self, prompts: Sequence[str]) -> Tensor | None:
        """ "0".."9" -> one-hot rows, "" -> the zero row (null class): (B, 10); None for time-
        only."""
        bad = [p for p in prompts if p.strip() not in self.prompts]
        if bad:
            raise ValueError(
                f"MNIST prompts are the digits '0'..'9' or '' (unconditional); got {bad}"
            )
        if not self.lab.class_conditional:
            return None
        return self.lab.one_hot([int(p) if p.strip() else -1 for p in prompts])

    def example_images(self) -> dict[str, Tensor]:
        """One test digit of each class, name "digit-k" -> (1, 1, 28, 28) in [-1, 1]."""
        cfg = self.lab.config
        try:
            test = load_dataset(self.lab.dataset, cfg.data_root, "test")
        except DatasetUnavailableError as e:
            raise ValueError(
                f"the built-in examples are test digits of the run's dataset: {e}; "
                "use images of your own instead"
            ) from e
        out = {}
        for k in range(10):
            idx = int((test.labels == k).nonzero()[0])
            out[f"digit-{k}"] = to_signed(test.images[idx : idx + 1]).to(self.device)
        return out

    def upsample(self, images: Tensor, prompts: Sequence[str], *, generator=None) -> Tensor:
        raise NotImplementedError(
            "the mnist backend has no super-resolution stage: its samples "
            "are final at 28x28 (only DeepFloyd IF has a 64->256 stage)"
        )
