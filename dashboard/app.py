"""hooklab dashboard: router and shared sidebar, nothing else (pages: dashboard/pages.py).

Run with ``make run`` (or ``streamlit run dashboard/app.py``); ``HOOKLAB_MODELS=mylab.models
make run`` also offers the models that module registers (:mod:`hooklab.models.registry`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from anywhere
    sys.path.insert(0, str(ROOT))

from dashboard import auth  # noqa: E402
from dashboard.i18n import LANGUAGES, t  # noqa: E402
from dashboard.pages import st_pages  # noqa: E402
from dashboard.state import default_author, model_module_errors  # noqa: E402

st.set_page_config(page_title="hooklab", page_icon=":material/phishing:", layout="wide")

with st.sidebar:
    choice = st.radio("Language / 语言", list(LANGUAGES), horizontal=True, key="hooklab_lang_label")
    st.session_state["hooklab_lang"] = LANGUAGES[choice]
# Sign-in configured ([auth] in .streamlit/secrets.toml): an unsigned visitor gets the sign-in
# page and nothing else (the script stops here). Not configured: None, nothing changes.
member = auth.require_sign_in()
model_module_errors()  # $HOOKLAB_MODELS: imported at the first page view, once per process
with st.sidebar:
    if member is None:
        st.text_input(t("Author", "作者"), value=default_author(), key="hooklab_author")
    else:  # the author of a saved run is the signed-in member, not a text box
        auth.sidebar_account(member)

pages = st_pages()  # the one page table: dashboard/pages.py
if pages:
    st.navigation(pages).run()
else:
    st.title("hooklab")
    st.write(t("A hook inspector for PyTorch.", "PyTorch 钩子检查器。"))
