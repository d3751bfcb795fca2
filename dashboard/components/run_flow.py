"""Open / save / share a run: the one flow every page uses.

* :func:`open_run` ``() -> (run_id, trace) | None`` — the run named by ``?run=<id>``.
* :func:`banner` ``(run_id, trace)`` — "Run <id> · author · model · edits" (one edit text).
* :func:`leave_button` ``(page)`` — the one "Back to live view" button (drops ``?run=``).
* :func:`save_run` ``(trace, page, default_tags=())`` — notes, tags, "Save run", then the
  run id and its share link. ``trace`` may be a callable that builds it (only on save).
* :func:`share_box` ``(run_id, page)`` — the share link as copyable code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import streamlit as st

from dashboard import auth, state
from dashboard.components.text import plain
from dashboard.i18n import t
from dashboard.pages import share_link
from hooklab.charts import runs as run_charts
from hooklab.core.edits import describe
from hooklab.core.errors import HooklabError
from hooklab.core.trace import Trace

log = logging.getLogger(__name__)


def edit_text(meta: dict) -> str:
    """THE edit text of a run (``""`` when it has none), from the edits the recorder wrote."""
    return describe(meta.get("edits"))


def open_run() -> tuple[str, Trace] | None:
    """The stored run named by ``?run=<id>`` as ``(run_id, trace)``, or ``None``.

    An unknown or corrupt run becomes one ``st.error`` and ``None`` (the live page follows).
    """
    run_id = st.query_params.get("run")
    if not run_id:
        return None
    try:
        trace = state.store().load(str(run_id))
    except (HooklabError, OSError, ValueError) as exc:
        log.info("cannot open run %s: %s", run_id, exc)
        st.error(f"{t('Opening run', '打开运行记录')} {plain(run_id)}: {plain(exc)}")
        return None
    return str(run_id), trace


def banner(run_id: str, trace: Trace) -> None:
    """Which run is shown: id, author, model and its edits (or "no edit")."""
    m = trace.meta
    no_edit = t("no edit", "无修改")  # a run's own text is shown as text: plain()
    cmp = m.get("compare") if isinstance(m.get("compare"), dict) else {}
    if "config_a" in cmp or "config_b" in cmp:  # an A/B comparison: both configurations
        sides = [f"{side}: {plain(_config_text(cmp.get(f'config_{side.lower()}'))) or no_edit}"
                 for side in ("A", "B")]
        edits = " · ".join(sides)
    else:
        edits = plain(edit_text(m)) or no_edit
    parts = [f"{t('Run', '运行')} {plain(run_id)}", plain(m.get("author")), plain(m.get("model")),
             edits]
    st.info(" · ".join(p for p in parts if p))


def _config_text(config) -> str:
    """The edit text of one side of a comparison (its edits, or a training config's)."""
    if isinstance(config, dict) and "edits" in config:
        config = config["edits"]
    return describe(config)


def leave_button(page: str) -> None:
    """The one button that drops ``?run=`` and goes back to the live page."""
    if st.button(t("Back to live view", "返回实时视图"), key=f"{page}_leave"):
        if "run" in st.query_params:
            del st.query_params["run"]
        st.rerun()


def share_box(run_id: str, page: str) -> None:
    """The share link of ``run_id`` on ``page`` as copyable code."""
    st.caption(t("Share link — opens this view for anyone on this server:",
                 "分享链接——同一服务器上的任何人都可打开此视图："))
    st.code(share_link(run_id, page), language=None)


def save_run(trace: Trace | Callable[[], Trace], page: str,
             default_tags: tuple[str, ...] | list[str] = ()) -> str | None:
    """Notes, tags and a "Save run" button; saves with the signed-in member as author (with
    sign-in configured), else the sidebar's author.

    ``trace`` is the trace to save, or a callable that builds it when the button is pressed.
    Returns the new run id after a save (also shown with its share link), else ``None``.
    """
    with st.expander(t("Notes and tags for “Save run”", "“保存运行”的备注和标签"),
                     expanded=False):
        notes = st.text_input(t("Notes", "备注"), key=f"{page}_notes")
        tags = st.text_input(t("Tags (comma separated)", "标签（逗号分隔）"),
                             value=", ".join(default_tags), key=f"{page}_tags")
    if st.button(t("Save run", "保存运行"), key=f"{page}_save"):
        with state.guard(t("Saving", "保存")):
            tr = trace() if callable(trace) else trace
            # signed in: the author is the member's identity (by=), not the sidebar's text
            run_id = state.store().save(tr, author=state.author(), notes=notes,
                                        tags=run_charts.parse_tags(tags), by=auth.identity())
        st.session_state[f"{page}_saved"] = run_id
    run_id = st.session_state.get(f"{page}_saved")
    if run_id:
        st.success(f"{t('Saved as run', '已保存为运行')} {run_id}")
        share_box(run_id, page)
    return run_id
