"""Inputs of the Sampler lab: prompts or digits, images (example, upload, sketch) and masks."""

from __future__ import annotations

import streamlit as st

from samplers.app.images import load_image, load_mask

from . import canvas, media
from .components import user_errors

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]


def prompt_input(backend, label: str, key: str, default: str) -> str:
    """Free text (DeepFloyd IF), or one of the backend's prompts (MNIST: a digit, '' = none)."""
    if backend.prompts is None:
        return st.text_input(label, default, key=key)
    options = list(backend.prompts)
    return st.selectbox(
        label,
        options,
        index=options.index(default),
        key=key,
        format_func=lambda p: p or "none (unconditional)",
    )


def image_input(backend, key: str, examples: dict, *, sketch: bool = False) -> tuple | None:
    """Pick an example, upload a file or (sketch=True) draw one; (PNG bytes, tensor) or None.

    The tensor is (1, C, S, S) in [-1, 1] at the backend's size; a bad upload is an st.error.
    Without `examples` (the backend could not provide them) only upload and sketch are offered.
    """
    sources = (["Example"] if examples else []) + ["Upload"] + (["Sketch"] if sketch else [])
    source = st.radio("Input image", sources, horizontal=True, key=f"{key}_source")
    size, channels = backend.image_size, backend.channels
    if source == "Example":
        name = st.selectbox("Example", list(examples), key=f"{key}_example")
        x = examples[name]
        return media.png_bytes(x), x
    if source == "Upload":
        upload = st.file_uploader("Image file", type=IMAGE_TYPES, key=f"{key}_upload")
        if upload is None:
            st.caption(f"Upload an image: it is center-cropped and resized to {size}x{size}.")
            return None
        data = upload.getvalue()
    else:
        data = canvas.sketch(f"{key}_sketch", color=channels == 3)
        if data is None:
            st.caption("Draw on the canvas (its toolbar has undo and clear).")
            return None
    with user_errors(f"Cannot use {'the upload' if source == 'Upload' else 'the sketch'}"):
        x = load_image(data, size, channels).to(backend.device)  # fp32, as the CLI loads it
        if source == "Upload":  # as `python -m samplers --invert`; then what the model will see
            if st.toggle(
                "Invert (dark ink on light paper; MNIST digits are light on dark)",
                key=f"{key}_invert",
            ):
                x = -x
            st.image(media.png_bytes(x), caption=f"the upload at {size}x{size}", width=160)
        return media.png_bytes(x), x
    return None


def mask_input(key: str, image_png: bytes, size: int):
    """Paint (or upload) the region to regenerate; (1, 1, S, S) in {0, 1} or None."""
    source = st.radio("Mask", ["Paint", "Upload"], horizontal=True, key=f"{key}_source")
    if source == "Paint":
        data = canvas.mask_painter(f"{key}_paint", image_png)
        if data is None:
            st.info(
                "Paint over the part of the image to regenerate (the canvas toolbar has "
                "undo and clear)."
            )
            return None
    else:
        upload = st.file_uploader(
            "Mask image (white = regenerate)", type=IMAGE_TYPES, key=f"{key}_upload"
        )
        if upload is None:
            return None
        data = upload.getvalue()
    with user_errors("Cannot use the mask"):
        return load_mask(data, size)
    return None
