"""Widgets shared by the pages: error boundary, run and checkpoint pickers, progress, results."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import streamlit as st

from training.checkpoints import Checkpoint, list_checkpoints

from . import media as images
from .catalog import Run, find_runs, no_runs_message
from .settings import Settings

# Errors a user can cause (bad upload, corrupt checkpoint, deleted run, missing access...): the
# lab raises these with a message meant for people. Anything else is a bug and propagates.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, NotImplementedError)


@contextmanager
def user_errors(action: str) -> Iterator[None]:
    """Show a user-caused error as one st.error line instead of a traceback."""
    try:
        yield
    except USER_ERRORS as e:
        st.error(f"{action}: {e}")


def runs_or_stop(settings: Settings) -> list[Run]:
    """The listed runs; with none, an st.info on how to train one and the page stops."""
    runs = find_runs(settings.runs_roots, settings.bundled)
    if not runs:
        st.info(no_runs_message(settings.runs_roots))
        st.stop()
    return runs


def run_select(runs: Sequence[Run], key: str, *, label: str = "Run") -> Run:
    """A selectbox over runs with checkpoints (all runs when none has one)."""
    usable = [r for r in runs if r.info.num_checkpoints] or list(runs)
    by_label = {r.label: r for r in usable}
    choice = st.selectbox(label, list(by_label), key=key, format_func=lambda lab: (
        f"{lab} · {by_label[lab].info.experiment} · {by_label[lab].info.status}"))
    return by_label[choice]


def checkpoint_select(run: Run, key: str) -> Checkpoint | None:
    """A selectbox over a run's checkpoints (latest first); st.info and None when it has none."""
    ckpts = list_checkpoints(run.path)[::-1]
    if not ckpts:
        st.info(f"Run `{run.label}` has no complete checkpoint yet (it saves one per epoch).")
        return None
    names = [c.path.name for c in ckpts]
    name = st.selectbox("Checkpoint", names, key=f"{key}_{run.label}")
    return ckpts[names.index(name)]


# ---- images: progress while sampling, results with downloads -------------------------------

@dataclass
class Result:
    """A finished action: PNG of the result grid, optional GIF and intermediate snapshots."""

    png: bytes
    caption: str
    gif: bytes | None = None
    snapshots: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)


class Progress:
    """A progress bar and live preview; called as a sampler callback(i, t, x, x0_hat).

    Keeps up to `max_frames` frames of x (the denoising animation) and `snapshots` x0-estimate
    PNGs for the intermediate-steps strip.
    """

    def __init__(self, total: int, label: str, nrow: int = 8, max_frames: int = 40,
                 snapshots: int = 6):
        self.total, self.label, self.nrow = max(total, 1), label, nrow
        self.every = max(1, self.total // max_frames)
        self.snap_every = max(1, self.total // snapshots)
        self.calls = 0
        self.frames: list = []
        self.snapshots: list[tuple[str, bytes]] = []
        self.bar = st.progress(0.0, text=label)
        self.preview = st.empty()

    def __call__(self, i: int, t, x, x0_hat) -> None:
        if self.calls % self.every == 0:
            self.frames.append(images.grid_array(x, self.nrow))
            self.preview.image(self.frames[-1], caption=f"x at t = {_fmt_t(t)}", width=320)
        if self.calls % self.snap_every == 0:
            self.snapshots.append((f"x0 estimate at t = {_fmt_t(t)}",
                                   images.png_bytes(x0_hat.clamp(-1, 1), self.nrow)))
        self.calls += 1
        self.bar.progress(min(self.calls / self.total, 1.0),
                          text=f"{self.label}: step {self.calls} / {self.total}")

    def clear(self) -> None:
        """Remove the bar and the live preview."""
        self.bar.empty()
        self.preview.empty()

    def result(self, x, caption: str) -> Result:
        """The Result of final images x (B, C, H, W) in [-1, 1], animation ending on them."""
        final = images.grid_array(x, self.nrow)
        gif = images.gif_bytes(self.frames + [final] * 8) if self.frames else None
        return Result(images.png_bytes(x, self.nrow), caption, gif, self.snapshots)


def _fmt_t(t) -> str:
    return f"{t:.2f}" if isinstance(t, float) else str(t)


def show_result(result: Result | None, name: str) -> None:
    """The result image, its animation and intermediates, and PNG / GIF download buttons."""
    if result is None:
        return
    cols = st.columns([3, 1] if result.gif else [1])
    cols[0].image(result.png, caption=result.caption)
    if result.gif:
        cols[1].image(result.gif, caption="denoising animation")
    if result.snapshots:
        with st.expander("Intermediate steps"):
            for col, (caption, png) in zip(st.columns(len(result.snapshots)), result.snapshots):
                col.image(png, caption=caption, width="stretch")
    d = st.columns(4)
    d[0].download_button("Download PNG", result.png, f"{name}.png", "image/png",
                         on_click="ignore", key=f"{name}_png")
    if result.gif:
        d[1].download_button("Download GIF", result.gif, f"{name}.gif", "image/gif",
                             on_click="ignore", key=f"{name}_gif")


# ---- inputs of the sampler lab ---------------------------------------------------------------

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]


def prompt_input(backend, label: str, key: str, default: str) -> str:
    """A text prompt (DeepFloyd IF) or a digit, '' = unconditional (MNIST)."""
    if backend.name != "mnist":
        return st.text_input(label, default, key=key)
    options = ["", *map(str, range(10))]
    return st.selectbox(label, options, index=options.index(default), key=key,
                        format_func=lambda p: p or "none (unconditional)")


def image_input(backend, key: str, examples: dict, *, sketch: bool = False) -> tuple | None:
    """Pick an example, upload a file or (sketch=True) draw one; (PNG bytes, tensor) or None.

    The tensor is (1, C, S, S) in [-1, 1] at the backend's size; a bad upload is an st.error.
    """
    from . import canvas

    sources = ["Example", "Upload"] + (["Sketch"] if sketch else [])
    source = st.radio("Input image", sources, horizontal=True, key=f"{key}_source")
    size, channels = backend.image_size, backend.channels
    if source == "Example":
        name = st.selectbox("Example", list(examples), key=f"{key}_example")
        x = examples[name]
        return images.png_bytes(x), x
    if source == "Upload":
        upload = st.file_uploader("Image file", type=IMAGE_TYPES, key=f"{key}_upload")
        if upload is None:
            st.caption("Upload an image: it is center-cropped and resized to "
                       f"{size}x{size}.")
            return None
        data = upload.getvalue()
    else:
        data = canvas.sketch(f"{key}_sketch", color=channels == 3)
        if data is None:
            st.caption("Draw on the canvas (its toolbar has undo and clear).")
            return None
    with user_errors(f"Cannot use {'the upload' if source == 'Upload' else 'the sketch'}"):
        x = images.load_image(data, size, channels).to(backend.device)
        return images.png_bytes(x), x
    return None


def mask_input(key: str, image_png: bytes, size: int):
    """Paint (or upload) the region to regenerate; (1, 1, S, S) in {0, 1} or None."""
    from . import canvas

    source = st.radio("Mask", ["Paint", "Upload"], horizontal=True, key=f"{key}_source")
    if source == "Paint":
        data = canvas.mask_painter(f"{key}_paint", image_png)
        if data is None:
            st.info("Paint over the part of the image to regenerate (the canvas toolbar has "
                    "undo and clear).")
            return None
    else:
        upload = st.file_uploader("Mask image (white = regenerate)", type=IMAGE_TYPES,
                                  key=f"{key}_upload")
        if upload is None:
            return None
        data = upload.getvalue()
    with user_errors("Cannot use the mask"):
        return images.load_mask(data, size)
    return None
