"""Image I/O for the samplers: files, bytes, arrays or PIL images to (1, C, H, W) tensors in [-1, 1]
(the course's `process_pil_im`: Resize shorter side, CenterCrop, scale to [-1, 1]), masks, and
tensors back to uint8, PIL, labelled grids and GIFs."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.utils import make_grid

from .files import atomic_path

ImageSource = str | os.PathLike | bytes | BinaryIO | Image.Image | np.ndarray

ASSETS = Path(__file__).parent / "assets"
EXAMPLES = {
    "astronaut": "astronaut.jpg",
    "cat": "cat.jpg",
    "coffee": "coffee.jpg",
    "rocket": "rocket.jpg",
    "sketch": "sketch.png",
}
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # ~89 megapixels; larger files are refused as bombs
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_REDUCIBLE = ("L", "RGB", "RGBA", "LA")  # modes Image.reduce supports


class ImageLoadError(ValueError):
    """An input that is not a usable image: not an image at all, truncated, or far too large."""


def open_image(source: ImageSource, *, min_side: int | None = None) -> Image.Image:
    """Decode `source` into a PIL image with EXIF orientation applied.

    `source`: a path, raw bytes, a binary file object, a PIL image, or a uint8 array (H, W[, C]).
    `min_side`: when set, a large image is reduced while decoding to no less than this many pixels
    on its shorter side (keeps memory bounded for big photos). Raises `ImageLoadError`.
    """
    if isinstance(source, Image.Image):
        return ImageOps.exif_transpose(source)
    if isinstance(source, np.ndarray):
        try:
            return Image.fromarray(source)
        except (TypeError, ValueError) as err:
            raise ImageLoadError(
                f"cannot read an image from an array of shape {source.shape} and "
                f"dtype {source.dtype}: {err}"
            ) from err
    name = str(source) if isinstance(source, (str, os.PathLike)) else "the given data"
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            if min_side is not None and min(img.size) > 2 * min_side:
                img.draft(img.mode, (min_side, min_side))  # JPEG: decode at a reduced scale
                factor = min(img.size) // min_side
                if factor > 1 and img.mode in _REDUCIBLE:
                    img = img.reduce(factor)
            img.load()
    except FileNotFoundError as err:
        raise ImageLoadError(f"no such image file: {name}") from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(
            f"{name} is not an image file PIL can read (PNG, JPEG, GIF, BMP, WebP, TIFF...)"
        ) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageLoadError(
            f"{name} is too large to load safely (over {MAX_PIXELS:,} pixels; "
            "possible decompression bomb): downscale it first"
        ) from err
    except (IsADirectoryError, PermissionError) as err:
        raise ImageLoadError(f"cannot read {name}: {err.strerror}") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"{name} is truncated or corrupt: {err}") from err
    return ImageOps.exif_transpose(img)


def _flatten(img: Image.Image, channels: int, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL mode -> "RGB" (channels=3) or "L" (channels=1); transparency over `background`."""
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        full = 65535.0 if img.mode in _SIXTEEN_BIT or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / full * 255.0, 0, 255).round().astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, background + (255,))
        img.alpha_composite(rgba)
    return img.convert("RGB" if channels == 3 else "L")


def _fit(img: Image.Image, size: int) -> Tensor:
    """Resize the shorter side to `size`, center-crop -> (1, C, size, size) in [0, 1]."""
    img = TF.center_crop(TF.resize(img, size), [size, size])
    return TF.to_tensor(img).unsqueeze(0)


def load_image(
    source: ImageSource,
    size: int,
    channels: int = 3,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Tensor:
    """Any image -> (1, channels, size, size) float32 in [-1, 1], as the course's `process_pil_im`.

    Transparent pixels are composited over `background`; 16-bit images are scaled, not clipped.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = _flatten(open_image(source, min_side=size), channels, background)
    return _fit(img, size) * 2 - 1


def load_mask(source: ImageSource, size: int, threshold: float = 0.5) -> Tensor:
    """A mask image -> (1, 1, size, size) float32 in {0, 1}; 1 = the region to regenerate.

    Where some pixels are transparent (a browser canvas's RGBA, strokes on a clear layer) the
    painted, i.e. opaque, pixels are 1; otherwise (no alpha, or an alpha channel that is opaque
    everywhere, as editors often export) bright pixels are 1 (white on black). Cropped like
    `load_image`, so a mask drawn over an image stays aligned with it.
    """
    img = open_image(source, min_side=size)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    alpha = img.convert("RGBA").getchannel("A") if has_alpha else None
    if alpha is not None and alpha.getextrema()[0] < 255:
        gray = alpha
    else:
        gray = _flatten(img, 1, (0, 0, 0))
    return (_fit(gray, size) > threshold).float()


def example_images(size: int, channels: int = 3) -> dict[str, Tensor]:
    """The built-in pictures (assets/README.md): name -> (1, channels, size, size) in [-1, 1]."""
    return {name: load_image(ASSETS / file, size, channels) for name, file in EXAMPLES.items()}


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, C, H, W) or (C, H, W) in [-1, 1] -> uint8 array (B, H, W, C) (C = 1 or 3)."""
    x = images.detach().float().cpu()
    x = x.unsqueeze(0) if x.dim() == 3 else x
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def to_pil(images: Tensor) -> list[Image.Image]:
    """(B, C, H, W) in [-1, 1] -> B PIL images ("RGB" or "L")."""
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in to_uint8(images)]


def _upscale(rows: Sequence[Tensor], min_tile: int) -> list[Tensor]:
    """Same-size RGB tiles: every row to (N, 3, S, S), S = max(largest side, min_tile), nearest."""
    side = max(min_tile, *(r.shape[-1] for r in rows))
    out = []
    for r in rows:
        r = r.detach().float().cpu()
        r = r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r
        out.append(F.interpolate(r, size=(side, side), mode="nearest"))
    return out


def figure(
    rows: Sequence[Tensor],
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    min_tile: int = 128,
) -> Image.Image:
    """A labelled grid: `rows` are (N_i, C, H, W) tensors in [-1, 1], one row each (short rows are
    left blank at the end); small images are enlarged (nearest) to at least `min_tile` pixels."""
    if not rows:
        raise ValueError("figure needs at least one row of images")
    tiles = _upscale(rows, min_tile)
    ncol = max(r.shape[0] for r in tiles)
    blank = torch.ones_like(tiles[0][:1])
    flat = torch.cat([torch.cat([r, blank.expand(ncol - r.shape[0], -1, -1, -1)]) for r in tiles])
    grid = to_pil(make_grid(flat, nrow=ncol, padding=2, pad_value=1.0).unsqueeze(0))[0]
    font = ImageFont.load_default(size=14)
    left = 8 + max((int(font.getlength(s)) for s in row_labels), default=0) if row_labels else 0
    step = tiles[0].shape[-1] + 2
    # a column label about as wide as its tile breaks at its last space ("i=1 t=963" /
    # "(289/300)"), so that neighbours keep a gap
    col_labels = [
        text.rsplit(" ", 1)[0] + "\n" + text.rsplit(" ", 1)[1]
        if font.getlength(text) > step - 16 and " " in text
        else text
        for text in col_labels
    ]
    lines = max((text.count("\n") + 1 for text in col_labels), default=0)
    top = 4 + 18 * lines if lines else 0
    canvas = Image.new("RGB", (grid.width + left, grid.height + top), "white")
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(col_labels):
        draw.multiline_text(
            (left + 2 + i * step + step // 2, 4),
            text,
            fill="black",
            font=font,
            anchor="ma",
            align="center",
            spacing=2,
        )
    for i, text in enumerate(row_labels):
        draw.text((4, top + 2 + i * step + step // 2), text, fill="black", font=font, anchor="lm")
    return canvas


def grid(
    images: Tensor, nrow: int = 8, *, scale: int = 1, min_side: int = 0, pad_value: float = -1.0
) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> uint8 (H', W', 3) grid, `nrow` tiles a row.

    Tiles are enlarged pixel-exact (each pixel repeated) by `scale`, or more to reach `min_side`
    (MNIST's 28 px shown at a readable size); the gaps, 2 px times the scale, are `pad_value`
    (-1 black, 0 grey).
    """
    x = images.detach().float().cpu().clamp(-1, 1)
    scale = max(scale, 1, -(-min_side // x.shape[-1]))
    if scale > 1:
        x = x.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    g = make_grid(x, nrow=min(nrow, x.shape[0]), padding=2 * scale, pad_value=pad_value)
    return to_uint8(g)[0]


def _encode(image: Image.Image | np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, format=fmt)
    return buf.getvalue()


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """A PIL image or uint8 array (H, W[, C]) as PNG file bytes."""
    return _encode(image, "PNG")


Frame = Tensor | np.ndarray | Image.Image


def _write_gif(
    frames: Sequence[Frame], target, duration_ms: int, hold_ms: int | None, min_tile: int
) -> None:
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    images = [
        figure([f], min_tile=min_tile)
        if isinstance(f, Tensor)
        else f
        if isinstance(f, Image.Image)
        else Image.fromarray(f)
        for f in frames
    ]
    duration = duration_ms if hold_ms is None else [duration_ms] * (len(images) - 1) + [hold_ms]
    images[0].save(
        target, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
    )


def gif_bytes(
    frames: Sequence[Frame],
    *,
    duration_ms: int = 80,
    min_tile: int = 128,
    hold_ms: int | None = None,
) -> bytes:
    """`save_gif`, as GIF file bytes."""
    buf = io.BytesIO()
    _write_gif(frames, buf, duration_ms, hold_ms, min_tile)
    return buf.getvalue()


def save_gif(
    frames: Sequence[Frame],
    path: str | os.PathLike,
    *,
    duration_ms: int = 80,
    min_tile: int = 128,
    hold_ms: int | None = None,
) -> Path:
    """An endlessly looping GIF of `frames`: tensors (B, C, H, W) in [-1, 1] (each shown as one
    `figure` row) or ready images (uint8 arrays, PIL); the last frame is held `hold_ms` if given."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _write_gif(frames, tmp, duration_ms, hold_ms, min_tile)
    return path
