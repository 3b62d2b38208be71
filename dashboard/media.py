"""The dashboard's view of samplers.app.images: grids shown at a readable size, as arrays or PNG."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from samplers.app.images import grid
from samplers.app.images import png_bytes as _png

MIN_SIDE = 112  # smaller images (MNIST's 28 px) are enlarged, pixel-exact, to at least this


def readable_grid(x: Tensor, nrow: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 grid of x (B, C, H, W) in [-1, 1], nrow images a row, black gaps, tiles
    enlarged to at least MIN_SIDE (samplers.app.images.grid)."""
    return grid(x, nrow, min_side=MIN_SIDE)


def png_bytes(x: Tensor, nrow: int = 8) -> bytes:
    """PNG bytes of `readable_grid(x, nrow)`."""
    return _png(readable_grid(x, nrow))
