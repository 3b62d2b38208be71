"""Views for visual anagrams and factorized (hybrid) images, after visual_anagrams' views/.

A view has view(x) (what the model sees) and inverse_view(noise) (maps its noise estimate back);
both act on the last two dims of (B, C, H, W) tensors at any resolution and device.
inverse_variance(v) maps the variance values back: the spatial part of the view only.
Frequency views are factorizations, not bijections: view is the identity and inverse_view keeps
one frequency band, so the bands of a split sum to the estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .course import HYBRID_KERNEL_SIZE, HYBRID_SIGMA
from .filters import gaussian_blur


class View:
    """Identity; the base of all views."""

    def view(self, x: Tensor) -> Tensor:
        return x

    def inverse_view(self, x: Tensor) -> Tensor:
        return x

    def inverse_variance(self, v: Tensor) -> Tensor:
        return self.inverse_view(v)


class Flip(View):
    """Upside down (course 1.8): flip along H."""

    def view(self, x: Tensor) -> Tensor:
        return x.flip(-2)

    inverse_view = view


class Rotate(View):
    """Rotate by k * 90 degrees counter-clockwise."""

    def __init__(self, k: int = 1) -> None:
        self.k = k

    def view(self, x: Tensor) -> Tensor:
        return torch.rot90(x, self.k, dims=(-2, -1))

    def inverse_view(self, x: Tensor) -> Tensor:
        return torch.rot90(x, -self.k, dims=(-2, -1))


class Transpose(View):
    """Swap H and W (a flip about the main diagonal)."""

    def view(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)

    inverse_view = view


class Negate(View):
    """Negate the image; variance values (not signed images) are left as they are."""

    def view(self, x: Tensor) -> Tensor:
        return -x

    inverse_view = view

    def inverse_variance(self, v: Tensor) -> Tensor:
        return v


class PatchPermute(View):
    """Shuffle the p x p patches by a permutation fixed by `seed` (p=1: pixel permutation)."""

    def __init__(self, patch_size: int = 8, seed: int = 0) -> None:
        self.p, self.seed = patch_size, seed

    def _permute(self, x: Tensor, inverse: bool) -> Tensor:
        *lead, h, w = x.shape
        p = self.p
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
        perm = torch.randperm(
            (h // p) * (w // p), generator=torch.Generator().manual_seed(self.seed)
        )
        perm = (perm.argsort() if inverse else perm).to(x.device)
        patches = x.reshape(*lead, h // p, p, w // p, p).transpose(-3, -2).flatten(-4, -3)
        patches = patches[..., perm, :, :].reshape(*lead, h // p, w // p, p, p).transpose(-3, -2)
        return patches.reshape(*lead, h, w)

    def view(self, x: Tensor) -> Tensor:
        return self._permute(x, inverse=False)

    def inverse_view(self, x: Tensor) -> Tensor:
        return self._permute(x, inverse=True)


def scaled_blur(x: Tensor, sigma: float, kernel_size: int, reference_size: int = 64) -> Tensor:
    """Gaussian blur whose sigma and kernel are given at reference_size px and scale with the image.

    Rule: f = min(H, W) / reference_size, sigma' = sigma f, kernel' = 2 floor(kernel f / 2) + 1
    (odd). At 64 px: kernel 33, sigma 2 (course 1.9); at 256 px: 133, 8 (as visual_anagrams).
    """
    if kernel_size >= 2 * reference_size:
        raise ValueError(
            f"kernel_size must be below {2 * reference_size} (twice the {reference_size} px it is "
            f"given at), got {kernel_size}"
        )
    f = min(x.shape[-2:]) / reference_size
    return gaussian_blur(x, 2 * int(kernel_size * f / 2) + 1, sigma * f)


class FrequencyBand(View):
    """Keep one band of a cascade of blurs b_0 = x, b_k = blur(b_{k-1}, sigmas[k-1]).

    Bands, lowest first: b_n, b_{n-1} - b_n, ..., b_0 - b_1; they sum to x. One sigma gives
    low/high pass; two give the three-band split (visual_anagrams' triple hybrids).
    """

    def __init__(
        self,
        band: int,
        sigmas: Sequence[float] = (HYBRID_SIGMA,),
        kernel_size: int = HYBRID_KERNEL_SIZE,
        reference_size: int = 64,
    ) -> None:
        if not 0 <= band <= len(sigmas):
            raise ValueError(
                f"band must be in [0, {len(sigmas)}] for {len(sigmas)} sigma(s), got {band}"
            )
        self.band, self.sigmas, self.kernel_size, self.reference_size = (
            band,
            tuple(sigmas),
            kernel_size,
            reference_size,
        )

    def inverse_view(self, noise: Tensor) -> Tensor:
        k = len(self.sigmas) - self.band  # this band is b_k - b_{k+1}, or b_n for the lowest
        blurs = [noise]
        for s in self.sigmas[: k + 1]:
            blurs.append(scaled_blur(blurs[-1], s, self.kernel_size, self.reference_size))
        return blurs[k] - blurs[k + 1] if k < len(self.sigmas) else blurs[k]

    def inverse_variance(self, v: Tensor) -> Tensor:
        return v


VIEWS: dict[str, Callable[..., View]] = {
    "identity": View,
    "flip": Flip,
    "rotate_90": lambda: Rotate(1),
    "rotate_180": lambda: Rotate(2),
    "rotate_270": lambda: Rotate(3),
    "transpose": Transpose,
    "negate": Negate,
    "patch_permute": PatchPermute,
    "pixel_permute": lambda seed=0: PatchPermute(1, seed),
    "low_pass": lambda sigma=HYBRID_SIGMA, kernel_size=HYBRID_KERNEL_SIZE: FrequencyBand(
        0, (sigma,), kernel_size
    ),
    "high_pass": lambda sigma=HYBRID_SIGMA, kernel_size=HYBRID_KERNEL_SIZE: FrequencyBand(
        1, (sigma,), kernel_size
    ),
    "triple_low_pass": lambda sigmas=(1.0, 2.0), kernel_size=HYBRID_KERNEL_SIZE: FrequencyBand(
        0, sigmas, kernel_size
    ),
    "triple_mid_pass": lambda sigmas=(1.0, 2.0), kernel_size=HYBRID_KERNEL_SIZE: FrequencyBand(
        1, sigmas, kernel_size
    ),
    "triple_high_pass": lambda sigmas=(1.0, 2.0), kernel_size=HYBRID_KERNEL_SIZE: FrequencyBand(
        2, sigmas, kernel_size
    ),
}
VIEW_NAMES = tuple(VIEWS)


def get_view(name: View | str, **kwargs: Any) -> View:
    """A view by name (VIEW_NAMES); kwargs go to its constructor (e.g. patch_size, seed, sigma)."""
    if isinstance(name, View):
        return name
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; known views: {', '.join(VIEW_NAMES)}")
    return VIEWS[name](**kwargs)
