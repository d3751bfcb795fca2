"""hooklab dashboard entry point (pages arrive with the dashboard issue)."""

import streamlit as st

st.set_page_config(page_title="hooklab", layout="wide")
st.title("hooklab")
st.write(
    "A hook inspector for PyTorch: what a forward hook captures, what each backward hook "
    "receives, what a gradient edit does upstream, and where Grad-CAM looks."
)
