"""The one page table: id, titles, icon, view file and URL path of every page.

The router (:mod:`dashboard.app`), the sidebar, the Runs page's "open in" links and every share
link read this table; nothing else lists the pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from dashboard.i18n import t
from hooklab.charts import runs as run_charts

VIEWS = Path(__file__).resolve().parent / "views"

#: (view file, English title, Chinese title, icon, page id, URL path). The first page is the
#: default and is served at ``/`` (its URL path is ``""``: ``/hook_basics`` would be "Page not
#: found"). Material icons ship with Streamlit's own font, so they render without an emoji font.
PAGES = [
    ("hook_basics.py", "Hook basics", "Hook 基础", ":material/phishing:", "hook_basics", ""),
    ("inspector.py", "Inspector", "检查器", ":material/search:", "inspector", "inspector"),
    ("compare.py", "Compare edits", "比较梯度修改", ":material/compare_arrows:", "compare",
     "compare"),
    ("gradcam.py", "Grad-CAM", "Grad-CAM", ":material/local_fire_department:", "gradcam",
     "gradcam"),
    ("runs.py", "Runs", "运行记录", ":material/folder_open:", "runs", "runs"),
    ("training.py", "Training", "训练", ":material/monitoring:", "training", "training"),
]


@dataclass(frozen=True)
class PageInfo:
    """One row of :data:`PAGES`."""

    file: str
    title_en: str
    title_zh: str
    icon: str
    id: str
    url_path: str

    @property
    def path(self) -> Path:
        return VIEWS / self.file

    @property
    def title(self) -> str:
        return t(self.title_en, self.title_zh)

    @property
    def default(self) -> bool:
        return self.url_path == ""


TABLE: dict[str, PageInfo] = {row[4]: PageInfo(*row) for row in PAGES}


def page(page_id: str) -> PageInfo:
    """The page ``page_id`` (an unknown id, e.g. a notebook run's empty page, is Runs)."""
    return TABLE.get(page_id) or TABLE["runs"]


def page_of(meta: dict) -> PageInfo:
    """The page that made a run (``meta["page"]``), else Runs."""
    return page(run_charts.page_of(meta))


def st_pages() -> list:
    """``st.Page`` objects for ``st.navigation``, in table order (the first is the default)."""
    return [st.Page(str(p.path), title=p.title, icon=p.icon, url_path=p.url_path or None,
                    default=p.default) for p in TABLE.values() if p.path.exists()]


def base_url() -> str:
    """``scheme://host:port`` of this server as the browser sees it ('' when unknown)."""
    try:
        url = st.context.url or ""
    except Exception:  # noqa: BLE001 - no browser session (AppTest)
        url = ""
    if "://" not in url:
        return ""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def share_link(run_id: str, page_id: str) -> str:
    """The link that opens ``run_id`` on ``page_id``: absolute when the server URL is known,
    else the path (``/inspector?run=<id>``; the default page is ``/?run=<id>``)."""
    path = page(page_id).url_path
    b = base_url()
    return run_charts.share_url(b, path, run_id) if b else run_charts.share_path(path, run_id)
