"""SliceGAN Studio: ``streamlit run app.py`` (or ``make run``). This file only routes; the pages live in pages/."""
import streamlit as st

st.set_page_config(page_title="SliceGAN Studio", page_icon=":material/deployed_code:", layout="wide")
st.navigation([
    st.Page("pages/explore.py", title="Explore", icon=":material/view_in_ar:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
]).run()
