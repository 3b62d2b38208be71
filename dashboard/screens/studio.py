"""MNIST studio: sample digits from a run's checkpoint, live, with the denoising animation."""

from __future__ import annotations

import streamlit as st
import torch

from dashboard import settings, state
from dashboard.components import (
    KEEP,
    checkpoint_select,
    model_label,
    run_problems,
    run_select,
    runs_or_stop,
    user_errors,
)
from dashboard.jobs import MAX_SEED
from dashboard.results import Progress, show_result, time_label
from training.config import LIMITS, interactive_sampler, samplers_of, walks_flow
from training.pretrained import LabModel

MAX_STEPS = LIMITS["sample_steps"]  # the sampler steps a run may ask for (training.config)


def controls(lab: LabModel) -> dict | None:
    """Sampling options; None until the form is submitted."""
    cfg = lab.config
    with st.form("studio_form", border=True):
        digits: list[int] = []
        if lab.class_conditional:
            digits = sorted(
                st.pills(
                    "Digits",
                    list(range(cfg.num_classes)),
                    selection_mode="multi",
                    default=list(range(cfg.num_classes)),
                    key="studio_digits",
                    **KEEP,
                )
            )
        c = st.columns(3)
        if lab.class_conditional:
            count = c[0].number_input("Samples per digit", 1, 16, 4, key="studio_count", **KEEP)
            guidance = c[1].slider(
                "Guidance scale",
                0.0,
                10.0,
                float(cfg.guidance_scale),
                0.5,
                key="studio_guidance",
                **KEEP,
            )
        else:
            guidance = 1.0
            count = c[0].number_input("Samples", 1, 100, 40, key="studio_count", **KEEP)
        methods = samplers_of(cfg)
        # keyed by model kind: switching runs of another kind starts from that kind's defaults
        default, default_steps = interactive_sampler(cfg)
        kind = "student" if cfg.is_student else lab.kind
        trained = f"the run's own: {cfg.sampler} {cfg.sample_steps} steps"
        borrowed = [
            m
            for m in methods
            if lab.kind == "flow" and not cfg.is_student and not walks_flow(lab.kind, m)
        ]
        sampler = c[2].selectbox(
            "Sampler",
            methods,
            index=methods.index(default),
            key=f"studio_sampler_{kind}",
            help=trained,
            format_func=lambda m: f"{m} (VP, via VelocityAsEps)" if m in borrowed else m,
            **KEEP,
        )
        steps = c[1].number_input(
            "Steps",
            1,
            MAX_STEPS,
            min(default_steps, MAX_STEPS),
            key=f"studio_steps_{kind}",
            disabled=sampler == "direct",
            **KEEP,
            help=trained,
        )
        seed = c[2].number_input("Seed", 0, MAX_SEED, 0, key="studio_seed", **KEEP)
        if borrowed:
            st.caption(
                f"{' and '.join(borrowed)} are samplers of noise-predicting (VP) models, walking "
                f"T = {cfg.num_timesteps} steps: on this flow model they go through "
                "VelocityAsEps, which turns its velocity into a noise prediction. "
                f"{' and '.join(m for m in methods if m not in borrowed)} are its own."
            )
        if not st.form_submit_button("Sample", type="primary"):
            return None
    if lab.class_conditional and not digits:
        st.error("Choose at least one digit.")
        return None
    return dict(
        digits=digits,
        count=int(count),
        guidance=guidance,
        sampler=sampler,
        steps=int(steps),
        seed=int(seed),
    )


def sample(shared: state.Shared, opts: dict, source: str) -> None:
    """Run the sampler under the model lock with this request's own generator; the result is
    kept with `source`, the run and checkpoint that made it."""
    st.session_state.pop("studio_result", None)  # a failed attempt leaves no older result up
    lab: LabModel = shared.value
    digits, count = opts["digits"], opts["count"]
    # a grid wider than tall, of square cells: a row per digit when the samples outnumber the
    # digits, else a column per digit (the course's 4 x 10)
    by_row = bool(digits) and count > len(digits)
    labels = [d for d in digits for _ in range(count)] if by_row else digits * count
    nrow = count if by_row else len(digits) if digits else min(count, 10)
    progress = Progress(
        1 if opts["sampler"] == "direct" else opts["steps"],
        f"Sampling with {opts['sampler']}",
        nrow=nrow,
        time=lambda t: time_label(t, lab.config.num_timesteps),
    )
    g = torch.Generator(lab.device).manual_seed(opts["seed"])
    kw = dict(
        guidance_scale=opts["guidance"],
        sampler=opts["sampler"],
        steps=opts["steps"],
        generator=g,
        callback=progress,
    )
    with shared.lock:
        try:
            x = lab.sample(labels or [-1] * count, **kw)
        finally:
            progress.clear()
    what = f"digits {', '.join(map(str, digits))}" if digits else f"{opts['count']} samples"
    st.session_state["studio_result"] = progress.result(
        x,
        f"{what} · {opts['sampler']} · {opts['steps']} steps · guidance {opts['guidance']} "
        f"· seed {opts['seed']}",
        source,
    )


def page() -> None:
    s = settings.current()
    runs = runs_or_stop(s)
    run_problems(runs)
    left, right = st.columns(2)
    with left:
        run = run_select(runs, "studio_run")
    if run is None:
        return
    with right:
        ckpt = checkpoint_select(run, "studio_ckpt")
    if ckpt is None:
        return
    shared = None
    with user_errors(f"Cannot load {run.label} / {ckpt.path.name}"):
        shared = state.lab_model(run.path, ckpt, s.device)
    if shared is None:
        return
    lab: LabModel = shared.value
    st.caption(
        f"{lab.kind} model · {lab.config.conditioning} conditioning · "
        f"D = {lab.config.hidden} · trained on {lab.dataset} · device {s.device}"
    )
    source = model_label(run, ckpt)
    opts = controls(lab)
    if opts is not None:
        with user_errors("Sampling failed"):
            sample(shared, opts, source)
    show_result(st.session_state.get("studio_result"), "mnist-samples", source)


page()
