"""The Runs page's view of an evaluation run (``hooklab evaluate`` / ``hooklab.evaluate``).

Shows what was evaluated (model, data, n, methods, layers, metrics and the rest of the spec),
whether the run finished (or ended early / failed with k of n images scored, and how to finish
it), the summary table (mean ± sd per method × layer × metric, with each metric's direction),
the per-image distribution per method × layer (one panel per metric) and the per-image table
with a CSV download. Everything is read from the store (:func:`read_evaluation`); a run's text
is shown as text (:mod:`dashboard.components.text`).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import state
from dashboard.components.text import plain
from dashboard.i18n import t
from hooklab.charts import evaluation as charts
from hooklab.store.stream import run_status
from hooklab.studies.evaluation import is_evaluation, read_evaluation

__all__ = ["is_evaluation", "show"]


def _status(manifest: dict[str, Any], n: int) -> None:
    status = run_status(manifest)
    k = int(manifest.get("steps_done", 0))
    again = t(" Run the same `hooklab evaluate` command again to finish it: the images "
              "already scored are skipped.",
              " 再次运行同样的 `hooklab evaluate` 命令即可完成：已评分的图像会被跳过。")
    if status == "finished":
        st.success(t(f"Finished: all {n} images scored.", f"已完成：{n} 张图像全部评分。"))
    elif status == "live":
        st.info(t(f"Being scored now: {k} of {n} images so far.",
                  f"正在评分：目前 {k} / {n} 张图像。"))
    elif status == "ended early":
        st.warning(t(f"Ended early with {k} of {n} images scored (the writer stopped).",
                     f"提前结束：{n} 张图像中已评分 {k} 张（写入进程已停止）。") + again)
    else:
        error = plain(manifest.get("error", "")) or "—"
        st.warning(t(f"Failed with {k} of {n} images scored: ",
                     f"失败：{n} 张图像中已评分 {k} 张：") + error + again)


def _spec_rows(res, meta: dict[str, Any]) -> list[dict[str, str]]:
    s = res.spec
    fields = [
        (t("Model", "模型"), s.model or meta.get("model", "")),
        (t("Weights", "权重"), meta.get("weights", s.weights)),
        (t("Data", "数据"), f"{s.data} ({s.split})"),
        (t("Images", "图像数"), s.n),
        (t("Methods", "方法"), ", ".join(s.methods)),
        (t("Layers", "层"), ", ".join(s.layers)),
        (t("Metrics", "指标"), ", ".join(s.metrics)),
        (t("Target class", "目标类别"), s.target),
        (t("Deletion / insertion steps", "删除/插入步数"), s.steps),
        (t("Images per chunk", "每块图像数"), s.batch_size),
        (t("Seed", "种子"), s.seed),
    ]
    return [{"setting": k, "value": str(v)} for k, v in fields]


def show(store, rid: str, manifest: dict[str, Any]) -> None:
    """The evaluation run ``rid`` (its ``manifest`` already read)."""
    res = state.attempt(t("Reading the evaluation", "读取评估"), read_evaluation, store, rid)
    if res is None:
        return
    meta = manifest.get("meta", {})
    st.subheader(t("Evaluation", "评估"))
    _status(manifest, res.spec.n)
    st.dataframe(_spec_rows(res, meta), hide_index=True, width="stretch",
                 key=f"eval_spec_{rid}",
                 column_config={"setting": t("Setting", "设置"), "value": t("Value", "值")})
    for note in res.notes:
        st.caption(plain(note))

    scored = int(manifest.get("steps_done", 0))
    st.markdown(f"**{t('Summary', '汇总')}** · "
                + t(f"mean ± sd over {scored} images", f"{scored} 张图像的均值 ± 标准差"))
    st.dataframe(charts.summary_table(res.summary), hide_index=True, width="stretch",
                 key=f"eval_summary_{rid}",
                 column_config={"method": t("Method", "方法"), "layer": t("Layer", "层"),
                                "metric": t("Metric", "指标"),
                                "better": t("Better", "更好"),
                                "n": st.column_config.NumberColumn(t("Images", "图像数")),
                                "mean": st.column_config.NumberColumn(t("Mean", "均值"),
                                                                      format="%.4f"),
                                "sd": st.column_config.NumberColumn(t("SD", "标准差"),
                                                                    format="%.4f")})
    st.caption(t("Lower is better for average drop, deletion AUC and ROAD MoRF; higher for "
                 "the pointing game, increase in confidence, insertion AUC, ROAD LeRF and "
                 "combined.",
                 "平均下降、删除 AUC 和 ROAD MoRF 越低越好；指向游戏、置信度提升、插入 AUC、"
                 "ROAD LeRF 和综合分越高越好。"))
    if res.per_image.empty:
        st.info(t("No image has been scored yet.", "还没有图像被评分。"))
        return
    better = {"lower": t("lower is better", "越低越好"), "higher": t("higher is better", "越高越好")}
    titles = {c: f"{c} ({better[charts.BETTER[c]]})" for c in res.spec.columns
              if c in charts.BETTER}
    st.plotly_chart(charts.per_image_box(res.per_image, list(res.spec.columns), titles=titles),
                    width="stretch", key=f"eval_box_{rid}")
    with st.expander(t(f"Per image ({len(res.per_image)} rows)",
                       f"逐图像（{len(res.per_image)} 行）"), expanded=False):
        st.dataframe(res.per_image, hide_index=True, width="stretch",
                     key=f"eval_per_image_{rid}")
    st.download_button(t("Per-image table (.csv)", "逐图像表（.csv）"),
                       data=res.per_image.to_csv(index=False).encode(),
                       file_name=f"{rid}-per-image.csv", mime="text/csv", on_click="ignore",
                       key=f"eval_csv_{rid}")
