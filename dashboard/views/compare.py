"""Page 3 — Compare edits: two edit configurations on the same model and input, or in training."""

from __future__ import annotations

import streamlit as st

from dashboard import state
from dashboard.components import pickers, run_flow
from dashboard.components.text import code, plain
from dashboard.i18n import t
from hooklab.charts import compare as charts
from hooklab.studies import compare as cmp_mod
from hooklab.studies import train

PAGE = "compare"
RESULT_KEY = "compare_result"
DEFAULT_B = "conv2=scale(0.5)"


def _train_config(specs: list, steps: int):
    """The seed's SimpleCNN on the shapes data, same seed for A and B, under these edits."""
    return train.TrainConfig(steps=steps, edits=[e.spec() for e in specs], seed=0)


def _render_edits(cmp: cmp_mod.EditComparison, key: str) -> None:
    names = (t("A", "A"), t("B", "B"))
    st.markdown(f"**A**: {code(cmp_mod.config_text(cmp.config_a))} · "  # a run's text: code
                f"**B**: {code(cmp_mod.config_text(cmp.config_b))}")
    c1, c2 = st.columns(2)
    c1.metric(t("input gradient ‖B‖/‖A‖", "输入梯度 ‖B‖/‖A‖"), f"{cmp.input_grad_ratio:.4g}")
    if cmp.target:
        c2.metric(t("backpropagated class", "反向传播的类别"),
                  plain(", ".join(map(str, cmp.target))))
    quantity = st.radio(t("Gradients", "梯度"), ["param_grad", "grad_output"],
                        format_func={"param_grad": t("parameter gradients", "参数梯度"),
                                     "grad_output": t("layer output gradients", "层输出梯度")}.get,
                        horizontal=True, key=f"{key}_quantity")
    st.plotly_chart(charts.ratio_bars(cmp.table, ["input_grad", quantity], names=names),
                    width="stretch", key=f"{key}_ratio")
    st.caption(t("Below 1: the gradient shrank under B. Halving the output gradient of a layer "
                 "halves every gradient upstream of it (and that layer's own weights); layers "
                 "downstream are unchanged (ratio 1).",
                 "小于 1：B 下梯度变小。把某层输出的梯度减半，会使其上游的所有梯度（以及该层自身的"
                 "权重梯度）减半；下游的层不变（比值 1）。"))
    with st.expander(t("Table", "表格")):
        st.dataframe(cmp.table, hide_index=True, width="stretch")
    if cmp.input_grad_a is not None and cmp.input_grad_b is not None:
        st.plotly_chart(charts.input_grad_maps(cmp.input_grad_a, cmp.input_grad_b, names=names),
                        width="stretch", key=f"{key}_inputgrad")
    if cmp.cam_a is not None and cmp.cam_b is not None:
        st.plotly_chart(charts.cam_difference(cmp.cam_a, cmp.cam_b, names=names,
                                              layer=cmp.cam_layer or ""),
                        width="stretch", key=f"{key}_cam")
        st.caption(t("Grad-CAM normalises each map: scaling a gradient uniformly does not change "
                     "it; an edit that changes the activation or masks channels does.",
                     "Grad-CAM 会对每张图做归一化：均匀缩放梯度不会改变它；改变激活或屏蔽通道的修改会。"))
    else:
        st.caption(t("No CAM difference (no spatial layer, or CAM turned off).",
                     "没有 CAM 差异（没有空间层，或已关闭 CAM）。"))


def _render_training(res: cmp_mod.TrainingComparison, key: str) -> None:
    st.markdown(f"**A**: {code(cmp_mod.config_text(res.config_a.get('edits')))} · "
                f"**B**: {code(cmp_mod.config_text(res.config_b.get('edits')))} · "
                f"{t('steps', '步数')}: {len(res.history_a)}")
    c1, c2 = st.columns(2)
    c1.metric(t("test accuracy A", "测试准确率 A"), f"{res.test_accuracy_a:.3f}")
    c2.metric(t("test accuracy B", "测试准确率 B"), f"{res.test_accuracy_b:.3f}",
              delta=f"{res.test_accuracy_b - res.test_accuracy_a:+.3f}")
    st.plotly_chart(charts.training_curves(res.history_a, res.history_b), width="stretch",
                    key=f"{key}_curves")
    prefix = st.radio(t("Gradient norms of", "梯度范数"), ["param_grad_norm", "grad_norm"],
                      format_func={"param_grad_norm": t("parameters", "参数"),
                                   "grad_norm": t("layer outputs", "层输出")}.get,
                      horizontal=True, key=f"{key}_prefix")
    st.plotly_chart(charts.grad_norms_over_training(res.history_a, res.history_b,
                                                    prefix=prefix),
                    width="stretch", key=f"{key}_norms")


def main() -> None:
    st.title(t("Compare edits", "比较梯度修改"))
    st.caption(t("Run the same model and input under two edit configurations, A and B, and compare "
                 "the gradients they produce.",
                 "在同一模型和输入上用两组修改配置 A、B 运行，比较它们产生的梯度。"))

    opened = run_flow.open_run()
    settings = dict(opened[1].meta.get("settings") or {}) if opened else {}

    modes = ["single", "training"]
    mode = st.radio(t("Mode", "模式"), modes, index=modes.index(settings.get("mode", "single")),
                    format_func={"single": t("one forward + backward", "一次前向+反向"),
                                 "training": t("over training", "训练过程中")}.get,
                    horizontal=True, key=f"{PAGE}_mode")

    with st.container(border=True):
        c1, c2, c3 = st.columns(3)
        with c1:
            if mode == "single":
                with state.guard(t("Model", "模型")):
                    model = pickers.model_picker(PAGE, settings.get("model"))
                with state.guard(t("Input", "输入")):
                    inp = pickers.input_picker(PAGE, model, settings.get("input"))
            else:
                st.markdown(t("The seed's **SimpleCNN** trained from the same initial weights on "
                              "the same batches of the shapes data (Adam), once per configuration.",
                              "课程中的 **SimpleCNN**，从相同的初始权重、在 shapes 数据的相同批次上"
                              "训练（Adam），每种配置一次。"))
        with c2:
            text_a = pickers.edit_picker(f"{PAGE}_a", settings.get("config_a_text", ""),
                                         label=t("Configuration A (empty: no edit)",
                                                 "配置 A（留空：不修改）"))
        with c3:
            text_b = pickers.edit_picker(
                f"{PAGE}_b", settings.get("config_b_text", pickers.default_edit(model)
                                          if mode == "single" else DEFAULT_B),
                label=t("Configuration B", "配置 B"))
        if mode == "single":
            cam_layer = st.text_input(t("CAM layer (auto: the last spatial layer; empty: no CAM)",
                                        "CAM 层（auto：最后一个空间层；留空：不计算 CAM）"),
                                      value=settings.get("cam_layer", "auto"), key=f"{PAGE}_cam")
            go = st.button(t("Run A and B", "运行 A 和 B"), type="primary", key=f"{PAGE}_run")
        else:
            steps = st.slider(t("Training steps", "训练步数"), 5, 300,
                              int(settings.get("steps", 40)), step=5, key=f"{PAGE}_steps")
            go = st.button(t("Train A and B", "训练 A 和 B"), type="primary", key=f"{PAGE}_train")

    base_settings = {"mode": mode, "config_a_text": text_a, "config_b_text": text_b,
                     "model": model.spec if mode == "single" else {"name": "simple_cnn",
                                                                   "weights": "trained"}}
    if go:
        with state.guard(t("Compare", "比较")):
            specs_a = cmp_mod.normalise_config(text_a)
            specs_b = cmp_mod.normalise_config(text_b)
            if mode == "single":
                with model.lock, st.spinner(t("Running A and B…", "运行 A 和 B…")):
                    result = cmp_mod.compare_edits(model.model, inp.x, specs_a, specs_b,
                                                   cam_layer=cam_layer.strip() or None)
                meta_settings = {**base_settings, "input": inp.spec, "cam_layer": cam_layer}
            else:
                bar = st.progress(0.0, text=t("Training A…", "训练 A…"))
                result = cmp_mod.compare_training(
                    _train_config(specs_a, steps), _train_config(specs_b, steps),
                    steps=steps, progress=lambda f, msg: bar.progress(min(max(f, 0.0), 1.0),
                                                                      text=msg))
                bar.empty()
                meta_settings = {**base_settings, "steps": steps}
        st.session_state[RESULT_KEY] = (result, meta_settings)
        st.session_state.pop(f"{PAGE}_saved", None)
        if opened:
            st.query_params.clear()
            opened = None

    if opened is not None and not go:
        trace = opened[1]
        run_flow.banner(*opened)
        run_flow.leave_button(PAGE)
        info = trace.meta.get("compare")
        if not info:  # a run from another page or a notebook: one configuration, not two
            st.info(t("This run was not made on Compare edits, so it holds one configuration "
                      "(its edit is named above). Compare it with another run on the Runs page:",
                      "此运行不是在“比较梯度修改”页面生成的，只有一种配置（其修改见上方）。"
                      "可在运行记录页面与另一个运行比较："))
            run_flow.share_box(opened[0], "runs")
            return
        with state.guard(t("Showing run", "显示运行")):
            if info.get("mode") == "training":
                _render_training(cmp_mod.TrainingComparison.from_trace(trace), "stored")
            else:
                _render_edits(cmp_mod.EditComparison.from_trace(trace), "stored")
    else:
        stored = st.session_state.get(RESULT_KEY)
        if stored is None:
            st.info(t("Press the button to run both configurations.", "按按钮运行两种配置。"))
        else:
            result, meta_settings = stored
            meta = {"page": PAGE, "model": meta_settings["model"]["name"], "settings": meta_settings}
            with state.guard(t("Showing the comparison", "显示比较")):
                if isinstance(result, cmp_mod.TrainingComparison):
                    _render_training(result, "live")
                else:
                    _render_edits(result, "live")
                trace = result.to_trace(meta)
            run_flow.save_run(trace, PAGE, default_tags=("compare",))


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it runs nothing
    main()
