"""Sampler lab (course Part A) on DeepFloyd IF when it loads, else on a lab MNIST model."""

from __future__ import annotations

import streamlit as st

import samplers
from dashboard import backends, settings
from dashboard.components import (
    KEEP,
    checkpoint_select,
    model_label,
    run_problems,
    run_select,
    runs_or_stop,
    user_errors,
)
from dashboard.inputs import image_input, mask_input, prompt_input
from dashboard.jobs import MAX_SEED
from dashboard.results import Progress, Result, show_result, time_label
from dashboard.state import Shared
from samplers.app import tasks
from samplers.app.backends import BackendUnavailable
from samplers.app.images import figure, gif_bytes, png_bytes
from samplers.course import COURSE_T

TABS = [
    "Forward process",
    "Denoising",
    "Sampling & CFG",
    "SDEdit",
    "Text img2img",
    "Inpainting",
    "Visual anagrams",
    "Hybrids",
    "Upsampling",
]
BACKENDS = ["Auto", "DeepFloyd IF", "MNIST model"]
DEFAULTS = {  # prompt defaults: the course's for text backends (IF), digits for MNIST
    "text": dict(
        sample="an oil painting of a snowy mountain village",
        edit="a rocket ship",
        first=tasks.ANAGRAM_PROMPTS[0],
        second=tasks.ANAGRAM_PROMPTS[1],
        far=tasks.HYBRID_PROMPTS[0],
        near=tasks.HYBRID_PROMPTS[1],
    ),
    "digits": dict(sample="3", edit="7", first="6", second="9", far="0", near="1"),
}


# ---- backend --------------------------------------------------------------------------------


def mnist_backend(s: settings.Settings, reason: str) -> Shared | None:
    """A lab DDPM / flow run as the backend; the page says which and why."""
    runs = [
        r
        for r in runs_or_stop(s)
        if r.run.config is None or r.run.config.options.kind in ("ddpm", "flow")
    ]
    if not runs:
        st.info("No DDPM or flow run yet: train one with `python -m training flow-class`.")
        return None
    run_problems(runs)
    c = st.columns(2)
    with c[0]:
        run = run_select(runs, "lab_run", label="MNIST run")
    if run is None:
        return None
    with c[1]:
        ckpt = checkpoint_select(run, "lab_ckpt")
    if ckpt is None:
        return None
    try:
        shared = backends.mnist_backend(run.path, ckpt, s.device)
    except BackendUnavailable as e:
        st.error(f"Cannot load {run.label} / {ckpt.path.name}: {e}")
        return None
    st.info(
        f"Backend: MNIST model **{run.label}** ({ckpt.path.name}, "
        f"{run.run.experiment}, 28x28). {reason}"
    )
    st.session_state["lab_source"] = model_label(run, ckpt)  # what results came from
    return shared


def choose_backend(s: settings.Settings) -> Shared | None:
    choice = st.radio("Backend", BACKENDS, horizontal=True, key="lab_backend", **KEEP)
    if choice == "MNIST model":
        return mnist_backend(s, "Chosen above.")
    try:
        shared = backends.backend("deepfloyd", device=s.device, **settings.deepfloyd_options())
    except BackendUnavailable as e:
        if choice == "DeepFloyd IF":
            st.error(f"DeepFloyd IF is unavailable: {e}")
            return None
        return mnist_backend(s, f"DeepFloyd IF is unavailable here: {e}")
    st.success("Backend: DeepFloyd IF (stage 1 at 64x64, stage 2 to 256x256).")
    st.session_state["lab_source"] = "DeepFloyd IF"
    return shared


# ---- helpers shared by the tabs --------------------------------------------------------------


def run(shared: Shared, key: str, label: str, task, total: int, **options) -> None:
    """Call task(backend, generator=, schedule=, callback=, **options) -- a samplers.app.tasks
    function, exactly as `python -m samplers` calls it -- under the backend lock; keep the Result
    (the first figure; the others and the chain's frames beside it)."""
    backend = shared.value
    st.session_state.pop(key, None)  # a failed attempt leaves no older result up
    steps = len(backend.alphas_cumprod)
    progress = Progress(
        total, label, nrow=min(options.get("n", 1), 8), time=lambda t: time_label(t, steps)
    )
    with user_errors(f"{label} failed"), shared.lock:
        try:
            figures = task(
                backend,
                generator=tasks.make_generator(st.session_state.get("lab_seed", 0)),
                schedule=tasks.backend_schedule(backend),
                callback=progress,
                **options,
            )
        finally:
            progress.clear()
        st.session_state[key] = figures_result(figures, label, progress)


# what a task's extra figures show (samplers.app.tasks names them "KIND-IMAGE")
PANELS = {
    "denoise-onestep": "Noisy, Gaussian blur and one-step denoising at each t",
    "denoise-iterative": "Iterative denoising: the chain, every 5th course step",
}


def panel_caption(name: str) -> str:
    """What a task's figure `name` shows, in words (its own name without a known one)."""
    return next((words for kind, words in PANELS.items() if name.startswith(kind)), name)


def figures_result(figures: list[tasks.Figure], caption: str, progress: Progress | None) -> Result:
    """The task's figures as one Result of the chosen backend: the first as the picture, the rest
    as panels beneath it; the GIF of the first figure's own frames, else of the sampler steps
    the progress kept. A side-by-side comparison (denoising's "compare" figure: noisy, blur,
    one-step, iterative) leads."""
    figures = sorted(figures, key=lambda f: "-compare-" not in f.name)

    def drawn(f: tasks.Figure) -> bytes:
        return png_bytes(figure(f.rows, f.row_labels, f.col_labels))

    frames = next((f.frames for f in figures if f.frames), None)
    gif = gif_bytes(frames) if frames else progress and progress.gif()
    labels = " · ".join(figures[0].row_labels or figures[0].col_labels)
    return Result(
        drawn(figures[0]),
        f"{caption}: {labels}" if labels else caption,
        gif,
        source=st.session_state["lab_source"],
        panels=[(panel_caption(f.name), drawn(f)) for f in figures[1:]],
    )


def time_scale_note(backend) -> None:
    """Say how this backend's steps map to the course's t of 1000 (nothing for IF's own)."""
    steps = len(backend.alphas_cumprod)
    if steps != COURSE_T:
        st.caption(
            f"Times are given on the course's scale, t of {COURSE_T}; this model has {steps} "
            f"steps, so course t = 250 is its step {round(250 * steps / COURSE_T)} "
            f"(labels: t=250 ({round(250 * steps / COURSE_T)}/{steps}))."
        )


def steps(backend, *levels: int) -> int:
    """Sampler steps of the backend's default schedule from each course level (0: the start)."""
    schedule = tasks.backend_schedule(backend)
    return sum(
        len(schedule) - 1 - (tasks.level_index(backend, schedule, lv) if lv else 0) for lv in levels
    )


def scale() -> float:
    """The CFG scale chosen at the top of the page."""
    return st.session_state.get("lab_cfg", 1.0)


def done(key: str, name: str) -> None:
    show_result(st.session_state.get(key), name, st.session_state["lab_source"])


def defaults(backend) -> dict[str, str]:
    return DEFAULTS["text" if backend.prompts is None else "digits"]


# ---- tabs -----------------------------------------------------------------------------------


def forward_tab(shared, examples) -> None:
    backend = shared.value
    picked = image_input(backend, "fwd", examples)
    time_scale_note(backend)
    levels = st.multiselect(
        f"Timesteps t (the course's 0..{COURSE_T - 1})",
        list(range(0, tasks.COURSE_T, 50)),
        default=list(tasks.NOISE_TS),
        key="fwd_t",
    )
    if picked and levels and st.button("Add noise", key="fwd_go"):
        st.session_state.pop("fwd_result", None)
        figures = tasks.forward(
            backend,
            {"input": picked[1]},
            ts=sorted(levels),
            generator=tasks.make_generator(st.session_state.get("lab_seed", 0)),
        )
        st.session_state["fwd_result"] = figures_result(figures, "Forward process", None)
    done("fwd_result", "forward-process")


def denoise_tab(shared, examples) -> None:
    backend = shared.value
    time_scale_note(backend)
    picked = image_input(backend, "den", examples)
    c = st.columns(2)
    i_start = c[0].slider(
        "Iterative: start at course level i (smaller = noisier)",
        0,
        len(tasks.COURSE_TIMESTEPS) - 2,
        10,
        key="den_i",
    )
    guided = c[1].toggle(
        "Classifier-free guidance (the course uses none here)", False, key="den_cfg"
    )
    prompt = prompt_input(backend, "Prompt", "den_prompt", backend.default_prompt)
    if picked and st.button("Denoise", key="den_go"):
        run(
            shared,
            "den_result",
            "Denoising",
            tasks.denoise,
            steps(backend, i_start),
            images={"input": picked[1]},
            prompt=prompt,
            i_start=i_start,
            guidance_scale=scale() if guided else tasks.DENOISE_CFG,
        )
    done("den_result", "denoising")


def sample_tab(shared) -> None:
    backend = shared.value
    prompt = prompt_input(backend, "Prompt", "smp_prompt", defaults(backend)["sample"])
    n = int(st.number_input("Images", 1, 16, 4, key="smp_n"))
    if st.button("Sample with and without CFG", key="smp_go"):
        run(
            shared,
            "smp_result",
            "Sampling",
            tasks.sample,
            2 * steps(backend, 0),
            prompt=prompt,
            n=n,
            guidance_scale=scale(),
        )
    done("smp_result", "samples")


def edit_tab(shared, examples, key: str, prompt_default: str, what: str) -> None:
    """SDEdit (prompt: a generic photo) or text img2img (prompt: the target) at course levels."""
    backend = shared.value
    picked = image_input(backend, key, examples, sketch=True)
    prompt = prompt_input(backend, "Prompt", f"{key}_prompt", prompt_default)
    levels = st.multiselect(
        "Course levels i_start (small = bigger edits)",
        list(range(len(tasks.COURSE_TIMESTEPS) - 1)),
        default=list(tasks.SDEDIT_LEVELS),
        key=f"{key}_i",
    )
    if picked and levels and st.button(what, key=f"{key}_go", type="primary"):
        levels = sorted(levels)
        run(
            shared,
            f"{key}_result",
            what,
            tasks.sdedit,
            steps(backend, *levels),
            images={"input": picked[1]},
            prompt=prompt,
            levels=levels,
            guidance_scale=scale(),
            name=key,
        )
    done(f"{key}_result", key)


def inpaint_tab(shared, examples) -> None:
    backend = shared.value
    picked = image_input(backend, "inp", examples)
    if picked is None:
        return
    mask = mask_input("inp_mask", picked[0], backend.image_size)
    prompt = prompt_input(backend, "Prompt", "inp_prompt", backend.default_prompt)
    if mask is not None and st.button("Inpaint", key="inp_go", type="primary"):
        run(
            shared,
            "inp_result",
            "Inpainting",
            tasks.inpaint,
            steps(backend, 0),
            images={"input": picked[1]},
            masks={"input": mask},
            prompt=prompt,
            guidance_scale=scale(),
        )
    done("inp_result", "inpainting")


def prompt_pair(
    backend, n_cols: int, first: tuple[str, str, str], second: tuple[str, str, str]
) -> tuple[str, str, list]:
    """Two prompts in the first two of n_cols columns: (first, second, columns).

    Each spec is (label, widget key, name of its default in DEFAULTS).
    """
    cols = st.columns(n_cols)
    prompts = []
    for col, (label, key, default) in zip(cols, (first, second), strict=False):
        with col:
            prompts.append(prompt_input(backend, label, key, defaults(backend)[default]))
    return *prompts, cols


def anagram_tab(shared) -> None:
    backend = shared.value
    first, second, cols = prompt_pair(
        backend, 3, ("Seen as is", "ana_p1", "first"), ("Seen under the view", "ana_p2", "second")
    )
    views = [v for v in samplers.VIEW_NAMES if v != "identity" and "pass" not in v]
    view = cols[2].selectbox("View", views, key="ana_view")
    if st.button("Make the anagram", key="ana_go", type="primary"):
        run(
            shared,
            "ana_result",
            "Visual anagram",
            tasks.anagram,
            steps(backend, 0),
            prompts=[first, second],
            views=["identity", view],
            guidance_scale=scale(),
        )
    done("ana_result", "anagram")


def hybrid_tab(shared) -> None:
    backend = shared.value
    far, near, cols = prompt_pair(
        backend,
        4,
        ("Seen from far (low frequencies)", "hyb_far", "far"),
        ("Seen up close (high frequencies)", "hyb_near", "near"),
    )
    kernel = cols[2].select_slider(
        "Blur kernel (at 64 px)", [9, 17, 25, 33, 41], tasks.HYBRID_KERNEL_SIZE, key="hyb_k"
    )
    sigma = cols[3].slider(
        "Blur sigma (at 64 px)", 0.5, 4.0, tasks.HYBRID_SIGMA, 0.5, key="hyb_sigma"
    )
    if st.button("Make the hybrid", key="hyb_go", type="primary"):
        run(
            shared,
            "hyb_result",
            "Hybrid image",
            tasks.hybrid,
            steps(backend, 0),
            far=far,
            near=near,
            kernel_size=kernel,
            sigma=sigma,
            guidance_scale=scale(),
        )
    done("hyb_result", "hybrid")


def upsample_tab(shared) -> None:
    backend = shared.value
    if not backend.can_upsample:
        st.info(
            "Stage-2 upsampling (64 -> 256) needs DeepFloyd IF with its stage 2; this "
            "backend's samples are final at its own size."
        )
        return
    prompt = prompt_input(backend, "Prompt", "up_prompt", defaults(backend)["sample"])
    if st.button("Sample and upsample", key="up_go", type="primary"):
        run(
            shared,
            "up_result",
            "Stage 1 + stage 2",
            tasks.upsample,
            steps(backend, 0),
            prompts=[prompt],
            guidance_scale=scale(),
        )
    done("up_result", "upsampled")


def page() -> None:
    s = settings.current()
    shared = choose_backend(s)
    if shared is None:
        return
    backend = shared.value
    c = st.columns(2)
    c[0].number_input("Seed", 0, MAX_SEED, 0, key="lab_seed", **KEEP)
    c[1].slider(
        "CFG scale", 1.0, 15.0, float(backend.default_guidance_scale), 0.5, key="lab_cfg", **KEEP
    )
    examples: dict = {}
    with user_errors("No built-in example images (upload or sketch one)"):
        examples = backends.examples(shared)
    tabs = st.tabs(TABS, key="lab_tab", on_change="rerun")
    body = [
        lambda: forward_tab(shared, examples),
        lambda: denoise_tab(shared, examples),
        lambda: sample_tab(shared),
        lambda: edit_tab(shared, examples, "sde", backend.default_prompt, "SDEdit"),
        lambda: edit_tab(shared, examples, "i2i", defaults(backend)["edit"], "img2img"),
        lambda: inpaint_tab(shared, examples),
        lambda: anagram_tab(shared),
        lambda: hybrid_tab(shared),
        lambda: upsample_tab(shared),
    ]
    for tab, render in zip(tabs, body, strict=False):
        if tab.open:
            with tab:
                render()


page()
