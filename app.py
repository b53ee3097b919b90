"""SliceGAN Studio: ``streamlit run app.py`` (or ``make run``). This file only routes; the pages live in app_pages/.

(Not ``pages/``: Streamlit runs a folder of that name next to the entry script as an old-style multipage app on
a fresh server's first request, so a bookmarked /train would open without this navigation.)
"""
import time
import warnings
from pathlib import Path

import streamlit as st

# stpyvista's trame backend draws the 3D view with Plotter.export_html, which PyVista has deprecated; the warning
# is about stpyvista's code, not ours, and would fill the server console with one line per redraw.
warnings.filterwarnings("ignore", message="Plotter.export_html is deprecated")

# A local icon: a ":material/...:" page icon would be fetched from fonts.gstatic.com, and the app works offline.
st.set_page_config(page_title="SliceGAN Studio", page_icon=str(Path(__file__).parent / "app_pages" / "favicon.png"),
                   layout="wide")
page = st.navigation([
    st.Page("app_pages/explore.py", title="Explore", icon=":material/view_in_ar:", default=True),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
])
# A session's first run imports PyTorch and PyVista and loads the model before the page draws anything (about
# 15 s on a fresh server): say so at once, before any of that work, and clear it when the page has been drawn.
loading = st.empty()
if "app_loaded" not in st.session_state:
    st.session_state.first_run_started = time.perf_counter()
    loading.info("Loading SliceGAN Studio: starting PyTorch and the model, about 15 s on first start…",
                 icon=":material/hourglass_top:")
try:
    page.run()
    st.session_state.app_loaded = True
finally:
    loading.empty()
