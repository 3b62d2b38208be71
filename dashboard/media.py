"""Tensors to displayable bytes: grids, PNG and GIF (images (B, C, H, W) in [-1, 1])."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid


MIN_SIDE = 112  # smaller images (MNIST's 28 px) are enlarged, pixel-exact, to at least this


def grid_array(x: Tensor, nrow: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 grid of x (B, C, H, W) in [-1, 1], nrow images a row."""
    x = x.detach().float().cpu().clamp(-1, 1)
    scale = -(-MIN_SIDE // x.shape[-1])
    if scale > 1:
        x = x.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    grid = make_grid(x, nrow=min(nrow, x.shape[0]), padding=2 * max(scale, 1),
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


def load_image(data: bytes, size: int, channels: int) -> Tensor:
    """Image file bytes -> (1, channels, size, size) in [-1, 1] (EXIF-rotated, center-cropped).

    Any mode (grayscale, RGBA, palette, 16-bit) and size up to Pillow's decompression-bomb limit.
    """
    import torch
    from PIL import ImageOps, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (4 * size, 4 * size))  # JPEG: decode big photos at a reduced scale
        img.load()
    except UnidentifiedImageError:
        raise ValueError("this file is not an image (PNG, JPEG, WebP, GIF, BMP...)") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"the image is too large to open safely ({e})") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"the image is damaged or truncated ({e})") from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float: scale, don't clip
        a = np.asarray(img, dtype=np.float32)
        img = Image.fromarray((a * (255 / max(float(a.max()), 1.0))).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img)
    img = img.convert("L" if channels == 1 else "RGB")
    img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 127.5 - 1
    return (x[None, None] if channels == 1 else x.permute(2, 0, 1)[None])


def load_mask(data: bytes, size: int) -> Tensor:
    """Mask image bytes -> (1, 1, size, size) in {0, 1}: 1 (white) = regenerate."""
    return (load_image(data, size, 1) > 0).float()
