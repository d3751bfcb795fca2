"""The Runs page's comparison view of an edit sweep (``hooklab sweep`` / ``hooklab.sweep_edits``).

Pick a sweep of the store (:func:`list_sweeps`; the sweep of the opened run is preselected);
see its trials (configuration, seed, final accuracy and loss, status, run id; failed and
missing trials are rows, said above the table), the final accuracy per configuration (one point
per seed) and each trial's per-layer gradient-norm ratio over training against the no-edit
trial of the same seed (:func:`sweep_ratios`). Everything is read from the store; a run's text
is shown as text (:mod:`dashboard.components.text`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import state
from dashboard.components.text import code
from dashboard.i18n import t
from hooklab.charts import trials as charts
from hooklab.studies.sweep import list_sweeps, load_sweep, sweep_meta, sweep_ratios

__all__ = ["section", "sweep_of"]


def sweep_of(manifest: dict[str, Any] | None) -> str | None:
    """The sweep id of a run's manifest when the run is a sweep trial, else None."""
    sw = sweep_meta(manifest) if manifest else None
    return str(sw["id"]) if sw else None


def _option(sweeps: pd.DataFrame):
    rows = {r.sweep_id: r for r in sweeps.itertuples(index=False)}

    def label(sid: str) -> str:  # selectbox options are plain text
        r = rows[sid]
        name = f" · {r.name}" if r.name else ""
        return (f"{sid}{name} · {r.model}, {r.configs} × {r.seeds} "
                + t(f"(configs × seeds), {r.finished}/{r.runs} finished",
                    f"（配置 × 种子），{r.runs} 个中 {r.finished} 个完成"))
    return label


def section(store, preferred: str | None = None) -> None:
    """The sweep picker and the picked sweep's comparison view (``preferred``: preselect it)."""
    sweeps = state.attempt(t("Listing sweeps", "列出扫描"), list_sweeps, store)
    if sweeps is None:
        return
    if sweeps.empty:
        st.caption(t("No edit sweeps yet: `hooklab sweep run --edit \"\" --edit "
                     "\"conv2=scale(0.5)\" --seeds 0 1` trains each edit configuration × seed, "
                     "one run per trial.",
                     "还没有梯度修改扫描：`hooklab sweep run --edit \"\" --edit "
                     "\"conv2=scale(0.5)\" --seeds 0 1` 会为每个修改配置 × 种子训练一次，"
                     "每个试验一个运行。"))
        return
    ids = list(sweeps["sweep_id"])
    index = ids.index(preferred) if preferred in ids else 0
    sid = st.selectbox(t("Sweep", "扫描"), ids, index=index, format_func=_option(sweeps),
                       key=f"runs_sweep_pick_{preferred or ''}")
    result = state.attempt(t("Opening the sweep", "打开扫描"), load_sweep, store, sid)
    if result is None:
        return
    trials = result.trials
    failed = trials[trials["status"] != "finished"]
    if len(failed):
        st.warning(t(f"{len(failed)} of {len(trials)} trials did not finish "
                     "(their status and message are in the table).",
                     f"{len(trials)} 个试验中有 {len(failed)} 个未完成（状态和信息见表格）。"))
    st.dataframe(charts.trials_table(trials), hide_index=True, width="stretch",
                 key=f"runs_sweep_trials_{sid}",
                 column_config={
                     "trial": st.column_config.NumberColumn(t("Trial", "试验")),
                     "config": t("Edit configuration", "修改配置"),
                     "seed": st.column_config.NumberColumn(t("Seed", "种子")),
                     "final_accuracy": st.column_config.NumberColumn(
                         t("Final accuracy", "最终准确率"), format="%.4f"),
                     "final_loss": st.column_config.NumberColumn(
                         t("Final loss", "最终损失"), format="%.4f"),
                     "status": t("Status", "状态"), "message": t("Message", "信息"),
                     "run_id": st.column_config.TextColumn(t("Run", "运行"))})
    st.caption(t("Each trial is a training run: open it above (by its run id) or on the "
                 "Training page for its curves and norms. Sweep ",
                 "每个试验都是一次训练运行：可在上方按运行编号打开，或在训练页查看曲线和范数。扫描 ")
               + code(sid))
    st.plotly_chart(charts.final_accuracy(
        trials, title=t("Final test accuracy per configuration", "各配置的最终测试准确率"),
        y_title=t("accuracy", "准确率")), width="stretch", key=f"runs_sweep_acc_{sid}")
    ratios = state.attempt(t("Reading the trials' gradient norms", "读取试验的梯度范数"),
                           sweep_ratios, store, trials)
    if ratios is None:
        return
    if ratios.empty:
        st.info(t("No gradient-norm ratios: they compare a trial with an edit to the no-edit "
                  "trial (configuration \"\") of the same seed, and this sweep has no such pair.",
                  "没有梯度范数比：它比较有修改的试验与同一种子的无修改试验（配置 \"\"），"
                  "此扫描没有这样的配对。"))
        return
    st.plotly_chart(charts.ratio_lines(
        ratios, title=t("Output-gradient norm ratio to the no-edit trial of the same seed",
                        "输出梯度范数与同一种子无修改试验之比"),
        y_title=t("ratio (log)", "比值（对数）")), width="stretch", key=f"runs_sweep_ratio_{sid}")
    st.caption(t("1: the layer's output gradient is the baseline's; 0.5: halved. An edit on a "
                 "layer's gradient shows at the layers before it (upstream in backward); the "
                 "layer itself records the gradient before the edit.",
                 "1：该层输出梯度与基线相同；0.5：减半。对某层梯度的修改体现在它之前的层"
                 "（反向传播的上游）；该层本身记录的是修改前的梯度。"))
