"""Diffusion Lab dashboard: `make dashboard` (Runs, Train, MNIST studio, Sampler lab).

Each page's title and what it does are written here, before torch and the page's own imports
load (seconds the first time a server renders), so a page shows what it is at once.
"""

from pathlib import Path

import streamlit as st

st.set_page_config(page_title="Diffusion Lab", page_icon=":material/blur_on:", layout="wide")
SCREENS = Path(__file__).parent / "screens"  # not "pages/": that name switches Streamlit to
# its legacy folder mode, which runs a page without this script when it is opened first
PAGES = {  # title -> (script, icon, what the page does)
    "Runs": (
        "runs.py",
        "monitoring",
        "compare runs: loss curves, sample grids, quality against guidance and against compute.",
    ),
    "Train": (
        "train.py",
        "model_training",
        "start a run in the background, watch it live, stop, resume and evaluate it.",
    ),
    "MNIST studio": (
        "studio.py",
        "draw",
        "sample digits from a run's checkpoint, with the denoising animation.",
    ),
    "Sampler lab": (
        "sampler_lab.py",
        "science",
        "the course's Part A: forward process, denoising, CFG, SDEdit, inpainting, "
        "visual anagrams and hybrids.",
    ),
}
LANDING = (
    "**Diffusion Lab** trains DDPM and flow-matching models of MNIST digits from scratch and "
    "runs the sampling tricks of the course *Fun With Diffusion Models* on them.  \n"
    "Start here: compare the runs below (the lab ships three trained ones), sample one in the "
    "**MNIST studio**, try SDEdit in the **Sampler lab**, or train your own in minutes on "
    "**Train**."
)
navigation = st.navigation(
    [
        st.Page(SCREENS / script, title=title, icon=f":material/{icon}:", default=title == "Runs")
        for title, (script, icon, _) in PAGES.items()
    ]
)
st.title(navigation.title)
if navigation.title == "Runs":
    st.markdown(LANDING)
    st.caption(" · ".join(f"**{title}**: {what}" for title, (_, _, what) in PAGES.items()))
else:
    what = PAGES[navigation.title][2]
    st.caption(what[0].upper() + what[1:])

from dashboard import settings  # noqa: E402  (loads torch: after the header is on screen)
from samplers.app.tuning import keep_freed_memory  # noqa: E402

keep_freed_memory()  # large CPU tensors reuse freed memory (docs/performance.md)
s = settings.sidebar()
if s.exposure:
    st.warning(s.exposure, icon=":material/lock:")
navigation.run()
