"""Page 2 — Inspector: record one forward+backward of a model and look at every hook firing."""

from __future__ import annotations

import streamlit as st

import hooklab
from dashboard import state
from dashboard.components import exercises as exercise_ui
from dashboard.components import pickers, run_flow
from dashboard.components.text import plain
from dashboard.i18n import t
from hooklab.cam import attention as attention_maps
from hooklab.charts import attention as attention_charts
from hooklab.charts import trace as charts
from hooklab.recording.attention import attention_modules
from hooklab.studies import inspect

PAGE = "inspector"
TRACE_KEY = "inspector_trace"


def _run(model: pickers.ModelChoice, inp: pickers.InputChoice, layers, kinds: list[str],
         edits_text: str, target, param_grads: bool, keep_tensors: bool) -> hooklab.Trace:
    """One recorded forward+backward (:func:`hooklab.studies.inspect.run`) on the shared model."""
    settings = {"model": model.spec, "input": inp.spec, "layers": layers, "hooks": list(kinds),
                "edits_text": edits_text, "target": target, "param_grads": param_grads,
                "keep_tensors": keep_tensors}
    meta = {"page": PAGE, "model": model.name, "weights": model.weights,
            "input": inp.spec, "input_shape": list(inp.x.shape), "settings": settings}
    with model.lock:
        return inspect.run(model.model, inp.x, layers, kinds, edits_text, target,
                           param_grads=param_grads, keep_tensors=keep_tensors,
                           class_names=model.class_names, meta=meta)


def _show(trace: hooklab.Trace, key: str) -> None:
    """Timeline, event table, NaN/Inf flags and the selected event's tensor view."""
    ev = trace.events
    m = trace.meta
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(t("Hook firings", "钩子触发次数"), len(ev))
    c2.metric(t("Layers", "层数"), ev["layer"].nunique())
    c3.metric(t("Stored", "已存储"), f"{trace.stored_bytes / 2**20:.2f} MiB")
    if "prediction" in m:
        c4.metric(t("Prediction", "预测"), plain(m.get("prediction_name", m["prediction"])))
    if trace.truncated:
        st.warning(t("The tensor budget ran out: later events kept statistics only.",
                     "张量预算已用完：后面的事件只保留了统计量。"))
    st.subheader(t("Timeline", "时间线"))
    st.plotly_chart(charts.timeline(ev, title=t("Hook firings (timeline)", "钩子触发时间线")),
                    width="stretch", key=f"{key}_timeline")
    st.caption(t("x: firing order · y: layer · colour: hook kind · symbol: role. Forward events "
                 "come first (blue band), backward after the dashed line (red band).",
                 "横轴：触发顺序 · 纵轴：层 · 颜色：钩子类型 · 形状：角色。先前向（蓝色），"
                 "虚线之后是反向（红色）。"))
    bad = ev[(ev["nan_count"] > 0) | (ev["inf_count"] > 0)]
    if not bad.empty:
        st.error(t(f"NaN/Inf in {len(bad)} events: ", f"{len(bad)} 个事件含 NaN/Inf：")
                 + plain(", ".join(charts.event_label(r) for _, r in bad.head(8).iterrows())))
    st.subheader(t("Events", "事件"))
    st.dataframe(charts.event_table(ev), hide_index=True, width="stretch", height=300,
                 key=f"{key}_table")
    with st.expander(t("Per layer and role", "按层和角色汇总")):
        st.dataframe(charts.event_summary(ev), hide_index=True, width="stretch")
    if ev.empty:
        return
    st.subheader(t("Selected event", "选中的事件"))
    view = m.setdefault("view", {})
    labels = [charts.event_label(r) for _, r in ev.iterrows()]
    idx = st.selectbox(t("Event", "事件"), range(len(ev)), index=inspect.default_event(ev, view.get("event")),
                       format_func=lambda i: labels[i], key=f"{key}_event")
    row = ev.iloc[idx]
    view["event"] = int(row["seq"])
    if not row["key"]:
        st.info(t("This event kept statistics only (no tensor stored).",
                  "该事件只保留了统计量（未存储张量）。"))
        st.dataframe(ev.iloc[[idx]], hide_index=True)
        return
    tensor = trace.tensor(row["key"])
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.channel_maps(tensor, title=charts.event_label(row)),
                        width="stretch", key=f"{key}_maps")
    with right:
        st.plotly_chart(charts.histogram(tensor, title=str(row["role"])), width="stretch",
                        key=f"{key}_hist")
        st.dataframe(charts.stats_table(tensor), hide_index=True, width="stretch")
    act = inspect.partner(trace, row, "output")
    grad = inspect.partner(trace, row, "grad_output")
    channels = int(act.shape[1]) if act is not None and act.dim() >= 3 else 0
    ch = st.selectbox(t("Channel", "通道"), [-1, *range(channels)],
                      format_func=lambda c: t("mean over channels", "通道平均") if c < 0 else str(c),
                      key=f"{key}_channel")
    st.plotly_chart(charts.tensor_pair(act, grad, channel=None if ch < 0 else ch,
                                       titles=(t("activation", "激活"), t("gradient", "梯度"))),
                    width="stretch", key=f"{key}_pair")


def _attention(model: pickers.ModelChoice, inp: pickers.InputChoice, key: str) -> None:
    """Per-head attention of the class token for a model with nn.MultiheadAttention blocks
    (:func:`hooklab.cam.attention.class_token_attention`: one forward, weights asked for by a
    pre-hook; the page registers nothing itself)."""
    names = attention_modules(model.model)
    if not names:
        return
    st.subheader(t("Attention per head", "每个头的注意力"))
    c1, c2 = st.columns([3, 1])
    layer = c1.selectbox(t("Attention block", "注意力块"), names, index=len(names) - 1,
                         key=f"{key}_attn_layer")
    sample = 0
    if inp.x.shape[0] > 1:
        sample = int(c2.number_input(t("Image", "图像"), min_value=0,
                                     max_value=int(inp.x.shape[0]) - 1, value=0,
                                     key=f"{key}_attn_sample"))
    with model.lock:
        heads = state.attempt(t("Attention", "注意力"), attention_maps.class_token_attention,
                              model.model, inp.x[sample:sample + 1], layer)
    if heads is None:
        return
    gh, gw = heads.grid
    st.plotly_chart(attention_charts.head_maps(
        heads.maps[0], titles=[t(f"head {i + 1}", f"头 {i + 1}") for i in range(heads.heads)],
        title=t(f"class token → {gh}×{gw} patches · {layer}",
                f"类别 token → {gh}×{gw} 图块 · {layer}")),
        width="stretch", key=f"{key}_attn_heads")
    rest = float(heads.to_extra[0].mean())
    st.caption(t(f"Each panel: how much the class token attends to each patch in one head (one "
                 f"colour scale for all heads). The rest, {rest:.1%} on average, goes to the "
                 "class token itself and any register tokens. Computed on the chosen model and "
                 "input.",
                 f"每一格：一个头里类别 token 对每个图块的注意力（所有头共用一个色标）。其余平均 "
                 f"{rest:.1%} 给了类别 token 自己和寄存器 token。在所选模型和输入上计算。"))


def main() -> None:
    st.title(t("Inspector", "检查器"))
    st.caption(t("Choose a model, an input, layers, hook kinds and edits; run one forward and "
                 "backward pass; see every hook firing.",
                 "选择模型、输入、层、钩子类型和修改；运行一次前向和反向传播，查看每一次钩子触发。"))

    opened = run_flow.open_run()
    settings = dict(opened[1].meta.get("settings") or {}) if opened else {}

    with st.container(border=True):
        c1, c2, c3 = st.columns(3)
        with c1:
            with state.guard(t("Model", "模型")):
                model = pickers.model_picker(PAGE, settings.get("model"))
            with state.guard(t("Input", "输入")):
                inp = pickers.input_picker(PAGE, model, settings.get("input"))
            if inp.label_name:
                st.caption(f"{t('label', '标签')}: {inp.label_name}")
        with c2:
            layers = pickers.layer_picker(PAGE, model, settings.get("layers"))
            kinds = pickers.hook_kind_picker(PAGE, settings.get("hooks") or ())
        with c3:
            edits_text = pickers.edit_picker(PAGE, settings.get("edits_text", ""))
            tgt = st.radio(t("Backpropagate", "反向传播的目标"), ["predicted", "class", "sum"],
                           format_func={"predicted": t("predicted class score", "预测类别的分数"),
                                        "class": t("a chosen class", "指定类别"),
                                        "sum": t("output.sum() (the seed)", "output.sum()（课程）")}
                           .get, horizontal=True, key=f"{PAGE}_target")
            target = None if tgt == "predicted" else "sum"
            if tgt == "class":
                target = int(st.number_input(t("Class", "类别"), min_value=0, value=0,
                                             key=f"{PAGE}_class"))
            param_grads = st.checkbox(t("Parameter gradients", "参数梯度"), value=True,
                                      key=f"{PAGE}_params")
            keep = st.checkbox(t("Store tensors (off: statistics only, fastest)",
                                 "存储张量（关闭：只保留统计量，最快）"), value=True,
                               key=f"{PAGE}_keep")
        run = st.button(t("Run", "运行"), type="primary", key=f"{PAGE}_run")

    if run:
        with state.guard(t("Run", "运行")), st.spinner(t("Recording…", "记录中…")):
            trace = _run(model, inp, layers, kinds, edits_text, target, param_grads, keep)
        st.session_state[TRACE_KEY] = trace
        st.session_state.pop(f"{PAGE}_saved", None)
        if opened:
            st.query_params.clear()
            opened = None

    if opened is not None and not run:
        run_flow.banner(*opened)
        run_flow.leave_button(PAGE)
        with state.guard(t("Showing run", "显示运行")):
            _show(opened[1], "stored")
        _attention(model, inp, "stored")
    else:
        trace = st.session_state.get(TRACE_KEY)
        if trace is None:
            st.info(t("Press Run to record the model on the chosen input.",
                      "按“运行”在所选输入上记录模型。"))
        else:
            with state.guard(t("Showing the run", "显示结果")):
                _show(trace, "live")
            _attention(model, inp, "live")
            run_flow.save_run(trace, PAGE, default_tags=("inspector",))
    with st.expander(t("Predict, then reveal", "先预测，再揭晓")):
        exercise_ui.exercise_section(PAGE, kinds=("norm_ratio", "cam_peak"))


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it runs nothing
    main()
