"""English / 中文 labels. Labels are written inline at the call site: ``t("Run", "运行")``."""

from __future__ import annotations

import streamlit as st

LANGUAGES = {"English": "en", "中文": "zh"}


def lang() -> str:
    """The current session's language code ("en" or "zh")."""
    return st.session_state.get("hooklab_lang", "en")


def t(en: str, zh: str) -> str:
    """The label in the session's language."""
    return zh if lang() == "zh" else en
