"""Tensors to displayable bytes: grids, PNG and GIF (images (B, C, H, W) in [-1, 1])."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid


def grid_array(x: Tensor, nrow: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 grid of x (B, C, H, W) in [-1, 1], nrow images a row."""
    grid = make_grid(x.detach().float().cpu().clamp(-1, 1), nrow=min(nrow, x.shape[0]), padding=2,
                     value_range=(-1, 1), normalize=True)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def png_bytes(x: Tensor, nrow: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(grid_array(x, nrow)).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes(frames: list[np.ndarray], duration_ms: int = 80) -> bytes:
    buf = io.BytesIO()
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(buf, format="GIF", save_all=True, append_images=rest, duration=duration_ms, loop=0)
    return buf.getvalue()
