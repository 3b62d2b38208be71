"""What every sampling backend offers: a noise-predicting model, its schedule, its conditioning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: listing the backends (`--help`) loads no torch
    import torch
    from torch import Tensor


class BackendUnavailable(RuntimeError):
    """A backend cannot be loaded here: weights missing or gated, no access, no network, or a
    plugin module not installed. The message says how to fix it."""


@runtime_checkable
class Backend(Protocol):
    """A noise-prediction model with its schedule and conditioning.

    Images live in the VP space, (B, channels, image_size, image_size), data in [-1, 1].
    """

    name: str  # "deepfloyd" | "mnist"
    image_size: int  # 64 for IF stage 1, 28 for MNIST
    channels: int  # 3 | 1
    device: torch.device
    dtype: torch.dtype
    alphas_cumprod: Tensor  # (T,) float32 on `device`
    timesteps: list[int]  # default sampling schedule, descending (IF [990, ..., 0])
    default_prompt: str  # the course's weak condition: IF "a high quality photo", MNIST ""
    prompts: (
        tuple[str, ...] | None
    )  # the prompts it understands (MNIST "", "0".."9"); None: any text
    default_guidance_scale: float  # CFG scale of its course tasks (IF 7, MNIST the run's: 5)
    can_upsample: bool  # has a super-resolution stage (IF stage 2)

    def __call__(self, x: Tensor, t: int | Tensor, cond: Tensor | None) -> Tensor:
        """x (B, C, H, W), int timestep(s) -> eps (B, C, H, W) or eps + variance (B, 2C, H, W)."""
        ...

    def encode(self, prompts: Sequence[str]) -> Tensor | None:
        """Prompts -> conditioning with batch dim len(prompts); "" is the null prompt."""
        ...

    def example_images(self) -> dict[str, Tensor]:
        """Built-in inputs: name -> (1, C, H, W) in [-1, 1] on `device`."""
        ...

    def upsample(
        self, images: Tensor, prompts: Sequence[str], *, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> a larger image batch in [-1, 1] (IF: 64 -> 256).
        Backends without a super-resolution stage raise NotImplementedError."""
        ...
