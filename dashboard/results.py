"""Sampling progress (a sampler callback with a live preview) and results with downloads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import streamlit as st

from samplers.app.images import gif_bytes
from samplers.app.tasks import course_t
from samplers.course import COURSE_T

from . import media


def time_label(t: int | float, steps: int | None) -> str:
    """A sampler time as a person reads it. A VP step t of a model with `steps` (its T)
    timesteps: the course's t of 1000 and the model's own step, "course t = 250 (this model's
    step 75 of 300)" (the step alone when T is the course's); a flow time in [0, 1]:
    "flow time t = 0.22 (0 noise, 1 data)"."""
    if isinstance(t, float):
        return f"flow time t = {t:.2f} (0 noise, 1 data)"
    if steps is None or steps == COURSE_T:
        return f"t = {t} (of {COURSE_T})"
    return f"course t = {course_t(t, steps)} (this model's step {t} of {steps})"


@dataclass
class Result:
    """A finished action: PNG of the result grid, optional GIF, panels shown beneath it (the
    task's other figures) and intermediate snapshots (in an expander)."""

    png: bytes
    caption: str
    gif: bytes | None = None
    snapshots: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    source: str = ""  # the model that made it: "run · checkpoint", or the backend's name
    panels: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)


class Progress:
    """A progress bar and live preview; a sampler callback (one dict: i, t, x, denoised).

    Keeps up to `max_frames` frames of x (the denoising animation) and `snapshots` PNGs of the
    denoised estimate for the intermediate-steps strip.
    """

    def __init__(
        self,
        total: int,
        label: str,
        nrow: int = 8,
        max_frames: int = 40,
        snapshots: int = 6,
        time: Callable[[int | float], str] = lambda t: time_label(t, None),
    ):
        self.total, self.label, self.nrow, self.time = max(total, 1), label, nrow, time
        self.every = max(1, self.total // max_frames)
        self.snap_every = max(1, self.total // snapshots)
        self.calls = 0
        self.frames: list = []
        self.snapshots: list[tuple[str, bytes]] = []
        self.bar = st.progress(0.0, text=label)
        self.preview = st.empty()

    def __call__(self, step: dict) -> None:
        t, x = step["t"], step["x"]
        if self.calls % self.every == 0:
            self.frames.append(media.readable_grid(x, self.nrow))
            self.preview.image(self.frames[-1], caption=f"x at {self.time(t)}", width=320)
        if self.calls % self.snap_every == 0:
            self.snapshots.append(
                (
                    f"denoised estimate at {self.time(t)}",
                    media.png_bytes(step["denoised"].clamp(-1, 1), self.nrow),
                )
            )
        self.calls += 1
        self.bar.progress(
            min(self.calls / self.total, 1.0),
            text=f"{self.label}: sampler step {self.calls} of {self.total}, at {self.time(t)}",
        )

    def clear(self) -> None:
        """Remove the bar and the live preview."""
        self.bar.empty()
        self.preview.empty()

    def gif(self) -> bytes | None:
        """The kept frames as a GIF (None before any step)."""
        return gif_bytes(self.frames) if self.frames else None

    def result(self, x, caption: str, source: str = "") -> Result:
        """The Result of final images x (B, C, H, W) in [-1, 1], animation ending on them."""
        final = media.readable_grid(x, self.nrow)
        gif = gif_bytes(self.frames + [final] * 8) if self.frames else None
        return Result(media.png_bytes(x, self.nrow), caption, gif, self.snapshots, source)


def show_result(result: Result | None, name: str, source: str = "") -> None:
    """The result image, its animation and intermediates, and PNG / GIF download buttons; only
    a note when the result came from another model than `source`, the one now chosen."""
    if result is None:
        return
    if result.source != source:
        st.caption(f"The last result came from {result.source}; run it again for {source}.")
        return
    cols = st.columns([3, 1] if result.gif else [1])
    cols[0].image(result.png, caption=f"{source} · {result.caption}" if source else result.caption)
    if result.gif:
        cols[1].image(result.gif, caption="denoising animation")
    for caption, png in result.panels:
        st.image(png, caption=caption)
    if result.snapshots:
        with st.expander("Intermediate steps"):
            for col, (caption, png) in zip(
                st.columns(len(result.snapshots)), result.snapshots, strict=False
            ):
                col.image(png, caption=caption, width="stretch")
    d = st.columns(4)
    d[0].download_button(
        "Download PNG", result.png, f"{name}.png", "image/png", on_click="ignore", key=f"{name}_png"
    )
    if result.gif:
        d[1].download_button(
            "Download GIF",
            result.gif,
            f"{name}.gif",
            "image/gif",
            on_click="ignore",
            key=f"{name}_gif",
        )
