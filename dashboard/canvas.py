"""Drawing widgets on streamlit-drawable-canvas: a sketch pad and an inpainting-mask painter.

st_canvas raises on import outside a running Streamlit app, so it is imported inside the widgets.
The canvas returns only what was drawn (RGBA, transparent elsewhere; the background image is not
part of it); its own toolbar has undo, redo and clear. Both widgets return PNG bytes that the
samplers image loader reads, or None while nothing is drawn.
"""

from __future__ import annotations

import io

import numpy as np
import streamlit as st
from PIL import Image

from samplers.app.images import png_bytes

DISPLAY = 280  # canvas side in CSS pixels


def _strokes(
    key: str,
    *,
    stroke: str,
    width: int,
    background: Image.Image | None = None,
    background_color: str = "",
) -> np.ndarray | None:
    """The drawn RGBA array (DISPLAY x DISPLAY), or None when nothing is drawn yet."""
    from streamlit_drawable_canvas import st_canvas

    result = st_canvas(
        stroke_width=width,
        stroke_color=stroke,
        background_color=background_color,
        background_image=background,
        height=DISPLAY,
        width=DISPLAY,
        drawing_mode="freedraw",
        return_image_data=True,
        key=key,
    )
    data = result.image_data
    if data is None or not (result.json_data or {}).get("objects"):
        return None
    rgba = Image.fromarray(np.asarray(data, dtype=np.uint8), "RGBA")
    return np.asarray(rgba.resize((DISPLAY, DISPLAY), Image.Resampling.BILINEAR))


def sketch(key: str, *, color: bool) -> bytes | None:
    """A sketch pad: white strokes on black (MNIST digits) or colored strokes on white (photos)."""
    c = st.columns(2)
    width = c[0].slider("Brush size", 4, 60, 22, key=f"{key}_brush")
    ink = c[1].color_picker("Ink", "#1f4fd8", key=f"{key}_ink") if color else "#ffffff"
    paper = (255, 255, 255) if color else (0, 0, 0)
    drawn = _strokes(
        f"{key}_canvas", stroke=ink, width=width, background_color="#ffffff" if color else "#000000"
    )
    if drawn is None:
        return None
    alpha = drawn[..., 3:4].astype(np.float32) / 255
    rgb = drawn[..., :3] * alpha + np.array(paper, np.float32) * (1 - alpha)
    return png_bytes(rgb.round().astype(np.uint8))


def mask_painter(key: str, image_png: bytes) -> bytes | None:
    """Paint the region to regenerate over the image; a white-on-black mask PNG, or None."""
    width = st.slider("Brush size", 4, 80, 30, key=f"{key}_brush")
    background = (
        Image.open(io.BytesIO(image_png))
        .convert("RGB")
        .resize((DISPLAY, DISPLAY), Image.Resampling.NEAREST)
    )
    drawn = _strokes(
        f"{key}_canvas", stroke="rgba(255, 64, 64, 0.6)", width=width, background=background
    )
    if drawn is None:
        return None
    return png_bytes(np.where(drawn[..., 3] > 0, 255, 0).astype(np.uint8))
