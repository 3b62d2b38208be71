"""Diffusion Lab dashboard: `streamlit run dashboard/app.py` (Runs, Train, MNIST studio, Sampler
lab)."""

from pathlib import Path

import streamlit as st

from dashboard import settings
from samplers.app.tuning import keep_freed_memory

keep_freed_memory()  # large CPU tensors reuse freed memory (docs/performance.md)

st.set_page_config(page_title="Diffusion Lab", page_icon=":material/blur_on:", layout="wide")
SCREENS = Path(__file__).parent / "screens"  # not "pages/": that name switches Streamlit to
# its legacy folder mode, which runs a page without this script when it is opened first
navigation = st.navigation(
    [
        st.Page(SCREENS / "runs.py", title="Runs", icon=":material/monitoring:", default=True),
        st.Page(SCREENS / "train.py", title="Train", icon=":material/model_training:"),
        st.Page(SCREENS / "studio.py", title="MNIST studio", icon=":material/draw:"),
        st.Page(SCREENS / "sampler_lab.py", title="Sampler lab", icon=":material/science:"),
    ]
)
settings.sidebar()
navigation.run()
