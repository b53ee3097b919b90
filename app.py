"""SliceGAN Studio: ``streamlit run app.py`` (or ``make run``). This file only routes; the pages live in app_pages/.

(Not ``pages/``: Streamlit runs a folder of that name next to the entry script as an old-style multipage app on
a fresh server's first request, so a bookmarked /train would open without this navigation.)
"""
import warnings
from pathlib import Path

import streamlit as st

# stpyvista's trame backend draws the 3D view with Plotter.export_html, which PyVista has deprecated; the warning
# is about stpyvista's code, not ours, and would fill the server console with one line per redraw.
warnings.filterwarnings("ignore", message="Plotter.export_html is deprecated")

# A local icon: a ":material/...:" page icon would be fetched from fonts.gstatic.com, and the app works offline.
st.set_page_config(page_title="SliceGAN Studio", page_icon=str(Path(__file__).parent / "app_pages" / "favicon.png"),
                   layout="wide")
st.navigation([
    st.Page("app_pages/explore.py", title="Explore", icon=":material/view_in_ar:", default=True),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
]).run()
