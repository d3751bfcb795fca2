"""The Grad-CAM page's sanity strip and CAM doctor note (layout only): the model-parameter randomisation cascade
and, beside it, the data-randomisation test, both from :mod:`hooklab.cam.sanity` (Adebayo et
al. 2018), with the expected outcome said in words and the library's verdict.

Under the page's map, :func:`doctor_note` shows :func:`hooklab.cam.doctor.diagnose`'s message
when a map is NaN, blank, uniform or the same for every class.

The strip is :func:`hooklab.charts.sanity.sanity_strip`: the original map, then the map with one
more layer re-initialised from the top, each with its Spearman correlation and SSIM to the
original, and the data-randomisation pair beside them.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import state
from dashboard.components.cam import Model, _digest
from dashboard.components.pickers import InputChoice
from dashboard.i18n import t
from hooklab.cam import doctor, sanity
from hooklab.cam import engine as camlib
from hooklab.charts import cam_training as line_charts
from hooklab.charts import sanity as sanity_charts
from hooklab.data import datasets as datalib


@st.cache_data(show_spinner=False, max_entries=16)
def _mprt(model_key: str, digest: str, method: str, layer: str, target: int, _model: Model,
          _x: Any) -> sanity.MPRTResult:
    with _model.lock:
        return sanity.mprt(_model.net, _x, method, layer=layer, target=[int(target)])


@st.cache_data(show_spinner=False, max_entries=16)
def _data_test(digest: str, method: str, layer: str, target: int, _x: Any
               ) -> sanity.DataRandomisationResult:
    return sanity.data_randomisation(_x, method, layer=layer, target=[int(target)])


def sanity_section(model: Model, sample: InputChoice, res: camlib.CamResult, target: int
                   ) -> None:
    """The cascade strip and the data-randomisation test for a chosen method at the page's
    layer and class."""
    st.markdown(t("Does the map explain the **model** or only the **image**? Randomise the "
                  "model's layers from the top down, one more each time, and compare the maps "
                  "with the original one (Spearman rank correlation, SSIM).",
                  "热力图解释的是**模型**还是只是**图像**？从顶层往下逐层随机化模型参数，每次多一层，"
                  "并与原始热力图比较（Spearman 秩相关、SSIM）。"))
    methods = list(camlib.METHODS)
    method = st.selectbox(t("Method", "方法"), methods, index=methods.index(res.method)
                          if res.method in methods else 0,
                          format_func=lambda m: camlib.METHODS[m].title,
                          key="gradcam_sanity_method")
    settings = (model.choice.key, _digest(sample.x), method, res.layer, int(target))
    if st.button(t("Run the sanity checks", "运行合理性检查"), key="gradcam_sanity_run"):
        with st.status(t("Randomising the layers one by one…", "逐层随机化…"),
                       expanded=False) as status, state.guard(t("Sanity checks", "合理性检查")):
            cascade = _mprt(*settings, model, sample.x)
            status.update(label=t("Cascade done.", "级联完成。"), state="complete")
        st.session_state["gradcam_sanity"] = {"settings": settings, "cascade": cascade}
    done = st.session_state.get("gradcam_sanity")
    if not done or done["settings"][0] != model.choice.key:
        st.caption(t("Press the button: one CAM per randomised layer.",
                     "点击按钮：每个随机化的层计算一个 CAM。"))
        return
    if done["settings"] != settings:
        st.caption(t("Settings changed: press the button again to update.",
                     "设置已改变：再次点击按钮以更新。"))
    cascade: sanity.MPRTResult = done["cascade"]
    data = None
    if tuple(model.info.class_names) == tuple(datalib.SHAPE_CLASSES):
        data = state.attempt(t("Data-randomisation test", "数据随机化测试"), _data_test,
                             *settings[1:], sample.x)
    else:
        st.info(t("The data-randomisation test compares the shipped shapes SimpleCNNs (true vs "
                  "shuffled labels): pick the shapes model to see it beside the strip.",
                  "数据随机化测试比较随附的 shapes SimpleCNN（真实标签与打乱标签）：请选择 shapes "
                  "模型以在旁边看到它。"))
    st.plotly_chart(sanity_charts.sanity_strip(cascade, 0, data=data),
                    width="stretch", key="gradcam_sanity_strip")
    (st.success if cascade.passed else st.warning)(cascade.verdict)
    st.caption(t("Expected: ", "预期：") + cascade.expected)
    if data is not None:
        (st.success if data.passed else st.warning)(data.verdict)
        st.caption(t("Expected: ", "预期：") + data.expected)
    steps = list(range(len(cascade.labels)))
    st.plotly_chart(line_charts.location_curves(
        steps, {"Spearman": cascade.mean_spearman(), "SSIM": cascade.mean_ssim()},
        x_title=t("layers randomised (top first)", "已随机化的层数（从顶层起）"),
        y_title=t("similarity to the original", "与原图的相似度")),
        width="stretch", key="gradcam_sanity_curves")


def doctor_note(model: Model, sample: InputChoice, res: camlib.CamResult) -> None:
    """One warning per finding of the CAM doctor (nothing when the maps look fine)."""
    with state.guard(t("CAM doctor", "CAM 诊断")), model.lock:
        findings = doctor.diagnose(res, model.net, sample.x)
    for d in findings:
        st.warning(t("CAM doctor: ", "CAM 诊断：") + d.message, icon=":material/stethoscope:")
