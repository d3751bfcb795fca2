"""hooklab dashboard: router and shared sidebar, nothing else.

Run with ``make run`` (or ``streamlit run dashboard/app.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from anywhere
    sys.path.insert(0, str(ROOT))

from dashboard.i18n import LANGUAGES, t  # noqa: E402
from dashboard.state import default_author  # noqa: E402

st.set_page_config(page_title="hooklab", page_icon=":material/phishing:", layout="wide")

VIEWS = ROOT / "dashboard" / "views"
#: (file, English title, Chinese title, icon): Material icons ship with Streamlit's own font,
#: so they render where no emoji font is installed.
PAGES = [
    ("hook_basics.py", "Hook basics", "Hook 基础", ":material/phishing:"),
    ("inspector.py", "Inspector", "检查器", ":material/search:"),
    ("compare.py", "Compare edits", "比较梯度修改", ":material/compare_arrows:"),
    ("gradcam.py", "Grad-CAM", "Grad-CAM", ":material/local_fire_department:"),
    ("runs.py", "Runs", "运行记录", ":material/folder_open:"),
]

with st.sidebar:
    choice = st.radio("Language / 语言", list(LANGUAGES), horizontal=True, key="hooklab_lang_label")
    st.session_state["hooklab_lang"] = LANGUAGES[choice]
    st.text_input(t("Author", "作者"), value=default_author(), key="hooklab_author")

pages = [
    st.Page(str(VIEWS / f), title=t(en, zh), icon=icon, url_path=f.removesuffix(".py"))
    for f, en, zh, icon in PAGES
    if (VIEWS / f).exists()
]
if pages:
    st.navigation(pages).run()
else:
    st.title("hooklab")
    st.write(t("A hook inspector for PyTorch.", "PyTorch 钩子检查器。"))
