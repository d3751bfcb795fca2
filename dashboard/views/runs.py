"""Runs: the lab group's view of the trace store.

List (author, time, model, edits, tags, notes) with filter and search; a run's detail with its
share link (``?run=<id>``), a link to the page that made it, notes/tags editing, export, move to
trash; comparison of two runs; import of a run file; the trash with restore.

Opening ``/runs?run=<id>`` shows that run's detail, so a link can be passed to a colleague on
the same server.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import auth, pages, state
from dashboard.components import evaluation_view, run_flow, sweep_view
from dashboard.components.text import code, plain
from dashboard.i18n import t
from hooklab.charts import runs as charts
from hooklab.store import audit
from hooklab.store.stream import is_watch
from hooklab.studies.compare import compare_runs
from hooklab.studies.exercises import answer_summary, class_answers

#: Runs up to this size are exported (verified and zipped) while the page renders.
EAGER_EXPORT_BYTES = 32 * 2**20
PAGE = "runs"


def export_bytes(store, run_id: str) -> bytes:
    """The run as an exported zip file's bytes (written to a temporary folder, read back)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = store.export(run_id, Path(tmp) / f"{run_id}.zip")
        return Path(path).read_bytes()


def import_bytes(store, data: bytes, name: str = "run.zip", by=None) -> str:
    """Import an uploaded run file as ``by`` (the signed-in member, else None: the local
    user); returns the new run id (errors are the store's)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (Path(name).name or "run.zip")
        path.write_bytes(data)
        return store.import_(path, by=by)


def _select_run(rid: str | None) -> None:
    if rid:
        st.query_params["run"] = rid
    elif "run" in st.query_params:
        del st.query_params["run"]


# -- sections ------------------------------------------------------------------------------------

def run_list(store) -> pd.DataFrame:
    """Filters, the table and the timeline; returns the filtered table."""
    with state.guard(t("Listing runs", "列出运行")):
        table = charts.runs_table(store.list())
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    text = c1.text_input(t("Search", "搜索"), key="runs_search",
                         placeholder=t("id, notes, model, edits…", "编号、备注、模型、修改…"))
    authors = c2.multiselect(t("Author", "作者"), sorted(set(table["author"])), key="runs_authors")
    pages = c3.multiselect(t("Page", "页面"), sorted(set(table["page"]) - {""}), key="runs_pages")
    all_tags = sorted({tag for tags in table["tags"] for tag in tags})
    tags = c4.multiselect(t("Tags", "标签"), all_tags, key="runs_tags")
    shown_table = charts.filter_runs(table, text=text, authors=authors, pages=pages, tags=tags)
    st.caption(t(f"{len(shown_table)} of {len(table)} runs",
                 f"共 {len(table)} 个运行，显示 {len(shown_table)} 个"))
    if table.empty:
        st.info(t("No runs yet. Every page has a “Save run” button; saved runs appear here.",
                  "还没有运行记录。每个页面都有“保存运行”按钮，保存的运行会出现在这里。"))
        return shown_table
    display = shown_table.assign(tags=shown_table["tags"].map(", ".join))
    st.dataframe(display, hide_index=True, width="stretch", key="runs_table",
                 column_config={
                     "run_id": st.column_config.TextColumn(t("Run", "运行")),
                     "created": st.column_config.DatetimeColumn(t("Time (UTC)", "时间 (UTC)"),
                                                                format="YYYY-MM-DD HH:mm:ss"),
                     "author": t("Author", "作者"), "page": t("Page", "页面"),
                     "model": t("Model", "模型"), "edits": t("Edits", "修改"),
                     "tags": t("Tags", "标签"), "notes": t("Notes", "备注"),
                     "n_events": st.column_config.NumberColumn(t("Events", "事件数")),
                     "status": t("Status", "状态")})
    if len(shown_table) > 1:
        with st.expander(t("Runs over time", "运行时间线")):
            st.plotly_chart(charts.runs_timeline(shown_table), width="stretch",
                            key="runs_timeline")
    return shown_table


def run_detail(store, rid: str) -> dict | None:
    """One run: summary, share link, open-in-page link, an evaluation's results, notes/tags,
    export, delete; returns its manifest (None when it cannot be opened)."""
    manifest = state.attempt(t("Opening run", "打开运行"), store.manifest, rid)
    if manifest is None:
        return None
    meta = manifest.get("meta", {})
    page = pages.page_of(meta)
    st.subheader(t(f"Run {rid}", f"运行 {rid}"))
    created = str(manifest.get("created", ""))[:19].replace("T", " ")
    st.markdown(  # a run's fields as text (dashboard/components/text.py)
        f"**{t('Author', '作者')}:** {plain(manifest.get('author')) or '—'} · "
        f"**{t('Time', '时间')}:** {plain(created)} UTC · "
        f"**{t('Model', '模型')}:** {plain(meta.get('model')) or '—'} · "
        f"**{t('Page', '页面')}:** {page.title} · "
        f"**{t('Events', '事件数')}:** {plain(manifest.get('n_events', 0))}")
    edits = run_flow.edit_text(meta)
    if edits:
        st.markdown(f"**{t('Edits', '修改')}:** {code(edits)}")
    run_flow.share_box(rid, PAGE)
    if page.id != PAGE:
        st.caption(t(f"Open in {page.title}, the page that made it:",
                     f"在生成它的页面 {page.title} 中打开：")
                   + f" `{pages.share_link(rid, page.id)}`")
        try:
            st.page_link(str(page.path), query_params={"run": rid},
                         label=t(f"Open in {page.title}", f"在 {page.title} 中打开"),
                         icon=":material/open_in_new:")
        except st.errors.StreamlitAPIException:  # page not registered (run standalone)
            pass
    if evaluation_view.is_evaluation(manifest):
        evaluation_view.show(store, rid, manifest)

    may = state.attempt("", store.decide, rid, "update", auth.identity())
    if may is not None and not may.allowed:  # the store refuses too; say why before a click
        st.warning(plain(t("You can open and export this run, but not change it. ",
                           "你可以打开和导出此运行，但不能修改它。") + may.reason))
    with st.form(f"runs_edit_{rid}"):
        notes = st.text_area(t("Notes", "备注"), value=manifest.get("notes", ""),
                             key=f"runs_notes_{rid}")
        tags = st.text_input(t("Tags (comma-separated)", "标签（逗号分隔）"),
                             value=", ".join(manifest.get("tags", [])), key=f"runs_tagtext_{rid}")
        if st.form_submit_button(t("Save notes and tags", "保存备注和标签"),
                                 key=f"runs_save_meta_{rid}"):
            done = state.attempt(t("Saving notes", "保存备注"), store.update, rid, notes=notes,
                                 tags=charts.parse_tags(tags), by=auth.identity())
            if done is not None:
                st.toast(t("Notes and tags saved.", "备注和标签已保存。"))
                st.rerun()

    c1, c2 = st.columns(2)
    with c1:
        size = sum(int(f.get("bytes", 0)) for f in manifest.get("files", {}).values())
        if is_watch(manifest):  # a streamed training run: the store refuses to zip it
            st.caption(t("A streamed run (a training or an evaluation) is not exported to a "
                         "zip: copy its folder from the store.",
                         "流式运行（训练或评估）不导出为 zip：请从记录库复制其文件夹。"))
            data = None
        elif size <= EAGER_EXPORT_BYTES:  # small: build now, so a damaged run is one st.error
            data = state.attempt(t("Export", "导出"), export_bytes, store, rid)
        else:  # large: build the zip only when the button is pressed (off the page script)
            data = lambda: export_bytes(store, rid)  # noqa: E731
        if data is not None:
            st.download_button(t("Export run (.zip)", "导出运行（.zip）"), data=data,
                               file_name=f"{rid}.zip", mime="application/zip",
                               on_click="ignore", key=f"runs_export_{rid}")
    with c2:
        if st.button(t("Move to trash", "移到回收站"), key=f"runs_delete_{rid}"):
            with state.guard(t("Delete", "删除")):
                store.delete(rid, by=auth.identity())
            st.session_state["runs_flash"] = t(f"Run {rid} moved to the trash.",
                                               f"运行 {rid} 已移到回收站。")
            _select_run(None)
            st.rerun()

    history_section(store, rid)
    with st.expander(t("Events", "事件"), expanded=False):
        ev = state.attempt(t("Reading events", "读取事件"), store.events, rid)
        if ev is not None:
            cols = [c for c in ("seq", "step", "phase", "kind", "layer", "role", "index", "edit",
                                "shape", "mean", "std", "norm", "nan_count", "inf_count")
                    if c in ev.columns]
            st.dataframe(ev[cols].head(500), hide_index=True, width="stretch")
            if len(ev) > 500:
                st.caption(t(f"First 500 of {len(ev)} events.",
                             f"显示 {len(ev)} 个事件中的前 500 个。"))
    return manifest


def history_section(store, rid: str) -> None:
    """Who changed the run, when and how (the store's audit log); a broken chain is shown."""
    with st.expander(t("History (audit log)", "历史（审计日志）"), expanded=False):
        hist = state.attempt(t("Reading the audit log", "读取审计日志"), store.history, rid)
        report = state.attempt(t("Verifying the audit log", "校验审计日志"), store.verify_audit)
        if report is not None and not report.ok:
            st.error(plain(t("The audit log is damaged or was tampered with: ",
                             "审计日志已损坏或被篡改：") + "; ".join(report.problems[:5])))
        if hist is None:
            return
        if not hist:
            st.caption(t("No recorded changes (saved before the audit log existed).",
                         "没有记录的更改（在审计日志之前保存）。"))
            return
        st.dataframe(audit.history_table(hist), hide_index=True, width="stretch",
                     key=f"runs_history_{rid}")


def compare_section(store, table: pd.DataFrame) -> None:
    """Two runs side by side: hooklab.studies.compare.compare_runs, else per-layer gradient norms."""
    ids = list(table["run_id"])
    if len(ids) < 2:
        st.caption(t("Save at least two runs to compare them.", "至少保存两个运行才能比较。"))
        return
    c1, c2 = st.columns(2)
    a = c1.selectbox(t("Run A", "运行 A"), ids, index=1, key="runs_cmp_a")
    b = c2.selectbox(t("Run B", "运行 B"), ids, index=0, key="runs_cmp_b")
    if not st.toggle(t("Compare", "比较"), key="runs_cmp_on"):
        return
    with state.guard(t("Comparing runs", "比较运行")):
        ta, tb = store.load(a), store.load(b)
        full = compare_runs(ta, tb).table
        quantities = [q for q in ("grad_output", "param_grad", "input_grad")
                      if q in set(full["quantity"])]
    no_edit = t("no edit", "无修改")
    st.markdown(f"**A** {a}: {code(run_flow.edit_text(ta.meta) or no_edit)} · "
                f"**B** {b}: {code(run_flow.edit_text(tb.meta) or no_edit)}")
    if not quantities:
        st.info(t("Neither run recorded gradients.", "两个运行都没有记录梯度。"))
        return
    names = {"grad_output": t("output gradients", "输出梯度"),
             "param_grad": t("parameter gradients", "参数梯度"),
             "input_grad": t("input gradient", "输入梯度")}
    quantity = st.radio(t("Quantity", "量"), quantities, horizontal=True, key="runs_cmp_q",
                        format_func=names.get)
    norms = charts.from_norm_table(full, quantity)
    st.plotly_chart(charts.norm_comparison(
        norms, names=(f"A {a}", f"B {b}"), y_title=t("gradient norm", "梯度范数"),
        ratio_title="B / A"), width="stretch", key="runs_cmp_chart")
    st.dataframe(norms.rename(columns={"layer": t("Layer", "层"), "a": "‖A‖", "b": "‖B‖",
                                       "ratio": "B / A"}),
                 hide_index=True, width="stretch")


def exercise_answers_section(store) -> None:
    """The class's saved exercise answers, per exercise (hooklab.studies.exercises)."""
    answers = state.attempt(t("Exercise answers", "练习答案"), class_answers, store)
    if answers is None or answers.empty:
        st.caption(t("No exercise answers saved yet.", "还没有保存的练习答案。"))
        return
    st.dataframe(answer_summary(answers), hide_index=True, width="stretch",
                 key="runs_exercise_summary")
    chosen = st.selectbox(t("Exercise", "练习"), sorted(set(answers["exercise"])),
                          key="runs_exercise_pick")
    st.dataframe(answers[answers["exercise"] == chosen], hide_index=True, width="stretch",
                 key="runs_exercise_answers")


def import_section(store) -> None:
    up = st.file_uploader(t("Run file (.zip exported from hooklab)",
                            "运行文件（hooklab 导出的 .zip）"),
                          type=["zip"], key="runs_import_file")
    if st.button(t("Import", "导入"), key="runs_import_btn", disabled=up is None):
        with state.guard(t("Import", "导入")):
            rid = import_bytes(store, up.getvalue(), up.name, by=auth.identity())
        st.session_state["runs_flash"] = t(f"Imported as run {rid}.", f"已导入为运行 {rid}。")
        _select_run(rid)
        st.rerun()


def trash_section(store) -> None:
    trash = state.attempt(t("Trash", "回收站"), store.trash_list)
    if trash is None:
        return
    if trash.empty:
        st.caption(t("The trash is empty.", "回收站是空的。"))
        return
    st.dataframe(trash[["run_id", "deleted", "author", "page", "notes"]], hide_index=True,
                 width="stretch")
    rid = st.selectbox(t("Run to restore", "要恢复的运行"), list(trash["run_id"]),
                       key="runs_restore_id")
    if st.button(t("Restore", "恢复"), key="runs_restore_btn"):
        with state.guard(t("Restore", "恢复")):
            store.restore(rid, by=auth.identity())
        st.session_state["runs_flash"] = t(f"Run {rid} restored.", f"运行 {rid} 已恢复。")
        _select_run(rid)
        st.rerun()


def main() -> None:
    st.title(t("Runs", "运行记录"))
    st.caption(t("Every saved run of this lab group: who, when, what model, which edits. "
                 "Open one, share its link, compare two, export or import a run file.",
                 "本组保存的所有运行：谁、何时、什么模型、哪些修改。可打开、分享链接、比较、导出或导入运行文件。"))
    flash = st.session_state.pop("runs_flash", None)
    if flash:
        st.success(flash)
    with state.guard(t("Opening the store", "打开记录库")):
        store = state.store()

    table = run_list(store)
    ids = list(table["run_id"])
    wanted = st.query_params.get("run")
    options = [""] + ids + ([wanted] if wanted and wanted not in ids else [])
    current = st.selectbox(
        t("Open run", "打开运行"), options,
        index=options.index(wanted) if wanted in options else 0, key=f"runs_open_{wanted}",
        format_func={"": t("— choose a run —", "— 选择一个运行 —"),
                     **{r: r for r in options if r}}.get)
    if current != (wanted or ""):
        _select_run(current)
    manifest = run_detail(store, current) if current else None

    st.divider()
    st.subheader(t("Edit sweeps", "梯度修改扫描"))
    sweep_view.section(store, preferred=sweep_view.sweep_of(manifest))
    st.subheader(t("Exercise answers of the class", "全班的练习答案"))
    exercise_answers_section(store)
    st.subheader(t("Compare two runs", "比较两个运行"))
    compare_section(store, table)
    c1, c2 = st.columns(2)
    with c1:
        st.subheader(t("Import a run", "导入运行"))
        import_section(store)
    with c2:
        st.subheader(t("Trash", "回收站"))
        trash_section(store)


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it runs nothing
    main()
