"""Sampler lab (course Part A) on DeepFloyd IF when it loads, else on a lab MNIST model."""
from __future__ import annotations

import streamlit as st
import torch

import samplers
from samplers.backends import BackendUnavailable
from dashboard import backends, settings
from dashboard.catalog import Run
from dashboard.components import checkpoint_select, run_select, runs_or_stop, user_errors
from dashboard.inputs import image_input, mask_input, prompt_input
from dashboard.media import png_bytes
from dashboard.results import Progress, Result, show_result
from dashboard.state import Shared

TABS = ["Forward process", "Denoising", "Sampling & CFG", "SDEdit", "Text img2img", "Inpainting",
        "Visual anagrams", "Hybrids", "Upsampling"]
BACKENDS = ["Auto", "DeepFloyd IF", "MNIST model"]
DEFAULTS = {  # prompt defaults: the course's for IF, digits for MNIST
    "deepfloyd": dict(photo="a high quality photo", sample="an oil painting of a snowy mountain "
                      "village", edit="a rocket ship", first="an oil painting of people around a "
                      "campfire", second="an oil painting of an old man", far="a lithograph of a "
                      "skull", near="a lithograph of waterfalls"),
    "mnist": dict(photo="", sample="3", edit="7", first="6", second="9", far="0", near="1"),
}


# ---- backend --------------------------------------------------------------------------------

def mnist_backend(s: settings.Settings, reason: str) -> Shared | None:
    """A lab DDPM / flow run as the backend; the page says which and why."""
    runs = [r for r in runs_or_stop(s) if r.config.get("kind") in ("ddpm", "flow")]
    if not runs:
        st.info("No DDPM or flow run yet: train one with `python -m training flow-class`.")
        return None
    c = st.columns(2)
    with c[0]:
        run: Run = run_select(runs, "lab_run", label="MNIST run")
    with c[1]:
        ckpt = checkpoint_select(run, "lab_ckpt")
    if ckpt is None:
        return None
    try:
        shared = backends.backend("mnist", ckpt, run_dir=str(run.path),
                                  checkpoint=ckpt.path.name, device=s.device)
    except BackendUnavailable as e:
        st.error(f"Cannot load {run.label} / {ckpt.path.name}: {e}")
        return None
    st.info(f"Backend: MNIST model **{run.label}** ({ckpt.path.name}, "
            f"{run.config.get('experiment')}, 28x28). {reason}")
    return shared


def choose_backend(s: settings.Settings) -> Shared | None:
    choice = st.radio("Backend", BACKENDS, horizontal=True, key="lab_backend")
    if choice == "MNIST model":
        return mnist_backend(s, "Chosen above.")
    try:
        shared = backends.backend("deepfloyd", device=s.device,
                                  **settings.deepfloyd_options())
    except BackendUnavailable as e:
        if choice == "DeepFloyd IF":
            st.error(f"DeepFloyd IF is unavailable: {e}")
            return None
        return mnist_backend(s, f"DeepFloyd IF is unavailable here: {e}")
    st.success("Backend: DeepFloyd IF (stage 1 at 64x64, stage 2 to 256x256).")
    return shared


# ---- helpers shared by the tabs --------------------------------------------------------------

def conds(shared: Shared, *prompts: str):
    """Conditioning of each prompt and of the null prompt '' (the encoder is shared: locked)."""
    with shared.lock:
        return [shared.value.encode([p]) for p in prompts], shared.value.encode([""])


def run(shared: Shared, key: str, label: str, total: int, fn, nrow: int = 8,
        caption: str = "") -> None:
    """Call fn(generator, callback) -> images under the backend lock; keep the Result."""
    backend = shared.value
    progress = Progress(total, label, nrow=nrow)
    g = generator(backend)
    with user_errors(f"{label} failed"), shared.lock:
        try:
            x = fn(g, progress)
        finally:
            progress.clear()
        st.session_state[key] = progress.result(x, caption or label)


def noise(backend, n: int, g: torch.Generator) -> torch.Tensor:
    s = backend.image_size
    return torch.randn((n, backend.channels, s, s), generator=g, device=backend.device,
                       dtype=backend.dtype)


def generator(backend) -> torch.Generator:
    """This request's own generator, seeded with the seed chosen at the top of the page."""
    return torch.Generator(backend.device).manual_seed(st.session_state.get("lab_seed", 0))


def scale() -> float:
    """The CFG scale chosen at the top of the page."""
    return st.session_state.get("lab_cfg", 1.0)


def schedule(backend) -> tuple[list[int], torch.Tensor]:
    """The backend's default timesteps and alphas_cumprod (the samplers' positional pair)."""
    return backend.timesteps, backend.alphas_cumprod


def done(key: str, name: str) -> None:
    show_result(st.session_state.get(key), name)


# ---- tabs -----------------------------------------------------------------------------------

def forward_tab(shared, examples) -> None:
    backend = shared.value
    picked = image_input(backend, "fwd", examples)
    T = len(backend.alphas_cumprod)
    levels = st.multiselect("Timesteps", list(range(0, T, max(1, T // 20))),
                            default=[T // 4, T // 2, 3 * T // 4], key="fwd_t")
    if picked and levels and st.button("Add noise", key="fwd_go"):
        g = generator(backend)
        noisy = torch.cat([samplers.add_noise(picked[1], t, backend.alphas_cumprod, generator=g)
                           for t in sorted(levels)])
        st.session_state["fwd_result"] = Result(
            png_bytes(torch.cat([picked[1], noisy])), "original, then t = " +
            ", ".join(map(str, sorted(levels))))
    done("fwd_result", "forward-process")


def denoise_tab(shared, examples) -> None:
    backend = shared.value
    picked = image_input(backend, "den", examples)
    last = len(backend.timesteps) - 2
    i_start = st.slider("Start at timesteps[i] (smaller i = noisier)", 0, last, min(10, last),
                        key="den_i")
    prompt = prompt_input(backend, "Prompt", "den_prompt", DEFAULTS[backend.name]["photo"])
    if picked and st.button("Denoise", key="den_go"):
        t, ab = backend.timesteps[i_start], backend.alphas_cumprod
        (c,), u = conds(shared, prompt)

        def fn(g, cb):
            noisy = samplers.add_noise(picked[1], t, ab, generator=g)
            return torch.cat([
                picked[1], noisy, samplers.blur_denoise(noisy),
                samplers.one_step_denoise(backend, noisy, t, ab, c, u, scale()),
                samplers.iterative_denoise(backend, noisy, backend.timesteps, ab, i_start=i_start,
                                           cond=c, uncond=u, guidance_scale=scale(), generator=g,
                                           callback=cb)])

        run(shared, "den_result", "Denoising", len(backend.timesteps) - 1 - i_start, fn,
            caption=f"original · noisy (t = {t}) · Gaussian blur · one step · iterative")
    done("den_result", "denoising")


def sample_tab(shared) -> None:
    backend = shared.value
    prompt = prompt_input(backend, "Prompt", "smp_prompt", DEFAULTS[backend.name]["sample"])
    n = st.number_input("Images", 1, 16, 4, key="smp_n")
    if st.button("Sample with and without CFG", key="smp_go"):
        (c,), u = conds(shared, prompt)
        steps = len(backend.timesteps) - 1

        def fn(g, cb):
            x = noise(backend, 2 * n, g)
            plain = samplers.iterative_denoise(backend, x[:n], *schedule(backend),
                                               cond=c, generator=g)
            cfg = samplers.iterative_denoise(backend, x[n:], *schedule(backend),
                                             cond=c, uncond=u, generator=g, callback=cb,
                                             guidance_scale=scale())
            return torch.cat([plain, cfg])

        run(shared, "smp_result", "Sampling", steps, fn, nrow=n,
            caption=f"top: no CFG · bottom: CFG scale {scale()}")
    done("smp_result", "samples")


def edit_tab(shared, examples, key: str, prompt_default: str, what: str) -> None:
    """SDEdit (prompt: a generic photo) or text img2img (prompt: the target) at several levels."""
    backend = shared.value
    picked = image_input(backend, key, examples, sketch=True)
    prompt = prompt_input(backend, "Prompt", f"{key}_prompt", prompt_default)
    last = len(backend.timesteps) - 2
    levels = st.multiselect("Start indices i_start (small = bigger edits)", list(range(last + 1)),
                            default=[i for i in (1, 3, 5, 7, 10, 20) if i <= last], key=f"{key}_i")
    if picked and levels and st.button(what, key=f"{key}_go", type="primary"):
        (c,), u = conds(shared, prompt)
        levels = sorted(levels)
        total = sum(len(backend.timesteps) - 1 - i for i in levels)

        def fn(g, cb):
            return torch.cat([picked[1]] + [samplers.sdedit(
                backend, picked[1], i, *schedule(backend), cond=c, uncond=u,
                guidance_scale=scale(), generator=g, callback=cb)
                for i in levels])

        run(shared, f"{key}_result", what, total, fn, nrow=len(levels) + 1,
            caption="input, then i_start = " + ", ".join(map(str, levels)))
    done(f"{key}_result", key)


def inpaint_tab(shared, examples) -> None:
    backend = shared.value
    picked = image_input(backend, "inp", examples)
    if picked is None:
        return
    mask = mask_input("inp_mask", picked[0], backend.image_size)
    prompt = prompt_input(backend, "Prompt", "inp_prompt", DEFAULTS[backend.name]["photo"])
    if mask is not None and st.button("Inpaint", key="inp_go", type="primary"):
        (c,), u = conds(shared, prompt)
        mask = mask.to(backend.device)

        def fn(g, cb):
            out = samplers.inpaint(backend, picked[1], mask, *schedule(backend),
                                   cond=c, uncond=u, generator=g, callback=cb,
                                   guidance_scale=scale())
            return torch.cat([picked[1], mask.expand_as(picked[1]) * 2 - 1, out])

        run(shared, "inp_result", "Inpainting", len(backend.timesteps) - 1, fn, nrow=3,
            caption="original · mask · inpainted")
    done("inp_result", "inpainting")


def prompt_pair(backend, n_cols: int, first: tuple[str, str, str],
                second: tuple[str, str, str]) -> tuple[str, str, list]:
    """Two prompts in the first two of n_cols columns: (first, second, columns).

    Each spec is (label, widget key, name of its default in DEFAULTS).
    """
    cols = st.columns(n_cols)
    prompts = []
    for col, (label, key, default) in zip(cols, (first, second)):
        with col:
            prompts.append(prompt_input(backend, label, key, DEFAULTS[backend.name][default]))
    return *prompts, cols


def anagram_tab(shared) -> None:
    backend = shared.value
    first, second, cols = prompt_pair(backend, 3, ("Seen as is", "ana_p1", "first"),
                                      ("Seen under the view", "ana_p2", "second"))
    views = [v for v in samplers.VIEW_NAMES if v != "identity" and "pass" not in v]
    view = cols[2].selectbox("View", views, key="ana_view")
    if st.button("Make the anagram", key="ana_go", type="primary"):
        (c1, c2), u = conds(shared, first, second)

        def fn(g, cb):
            x = samplers.visual_anagram(
                backend, noise(backend, 1, g), *schedule(backend), conds=[c1, c2],
                views=["identity", view], uncond=u, generator=g, callback=cb,
                guidance_scale=scale())
            return torch.cat([x, samplers.get_view(view).view(x)])

        run(shared, "ana_result", "Visual anagram", len(backend.timesteps) - 1, fn, nrow=2,
            caption=f"as is: {first!r} · {view}: {second!r}")
    done("ana_result", "anagram")


def hybrid_tab(shared) -> None:
    backend = shared.value
    far, near, cols = prompt_pair(backend, 4, ("Seen from far (low frequencies)", "hyb_far", "far"),
                                  ("Seen up close (high frequencies)", "hyb_near", "near"))
    kernel = cols[2].select_slider("Blur kernel (at 64 px)", [9, 17, 25, 33, 41], 33, key="hyb_k")
    sigma = cols[3].slider("Blur sigma (at 64 px)", 0.5, 4.0, 2.0, 0.5, key="hyb_sigma")
    if st.button("Make the hybrid", key="hyb_go", type="primary"):
        (cf, cn), u = conds(shared, far, near)

        def fn(g, cb):
            return samplers.hybrid_image(
                backend, noise(backend, 1, g), *schedule(backend), cond_far=cf,
                cond_near=cn, uncond=u, kernel_size=kernel, sigma=sigma, generator=g, callback=cb,
                guidance_scale=scale())

        run(shared, "hyb_result", "Hybrid image", len(backend.timesteps) - 1, fn, nrow=1,
            caption=f"far: {far!r} · near: {near!r} (shrink it to see the far prompt)")
    done("hyb_result", "hybrid")


def upsample_tab(shared) -> None:
    backend = shared.value
    if backend.name == "mnist":
        st.info("Stage-2 upsampling (64 -> 256) needs DeepFloyd IF; the MNIST models' samples are "
                "final at 28x28.")
        return
    prompt = prompt_input(backend, "Prompt", "up_prompt", DEFAULTS[backend.name]["sample"])
    if st.button("Sample and upsample", key="up_go", type="primary"):
        (c,), u = conds(shared, prompt)

        def fn(g, cb):
            x = samplers.iterative_denoise(backend, noise(backend, 1, g), backend.timesteps,
                                           backend.alphas_cumprod, cond=c, uncond=u, generator=g,
                                           callback=cb,
                                           guidance_scale=scale())
            return backend.upsample(x, [prompt], generator=g)

        run(shared, "up_result", "Stage 1 + stage 2", len(backend.timesteps) - 1, fn, nrow=1,
            caption=f"{prompt!r} at 256x256")
    done("up_result", "upsampled")


def page() -> None:
    st.title("Sampler lab")
    s = settings.current()
    shared = choose_backend(s)
    if shared is None:
        return
    backend = shared.value
    c = st.columns(2)
    c[0].number_input("Seed", 0, 2**31 - 1, 0, key="lab_seed")
    c[1].slider("CFG scale", 1.0, 15.0, 7.0 if backend.name != "mnist" else 5.0, 0.5,
                key="lab_cfg")
    examples = backends.examples(shared)
    tabs = st.tabs(TABS, key="lab_tab", on_change="rerun")
    body = [lambda: forward_tab(shared, examples), lambda: denoise_tab(shared, examples),
            lambda: sample_tab(shared),
            lambda: edit_tab(shared, examples, "sde", DEFAULTS[backend.name]["photo"], "SDEdit"),
            lambda: edit_tab(shared, examples, "i2i", DEFAULTS[backend.name]["edit"], "img2img"),
            lambda: inpaint_tab(shared, examples), lambda: anagram_tab(shared),
            lambda: hybrid_tab(shared), lambda: upsample_tab(shared)]
    for tab, render in zip(tabs, body):
        if tab.open:
            with tab:
                render()


page()
