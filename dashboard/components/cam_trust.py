"""The Grad-CAM page's trust views: the layer sweep and CAMs over training (layout only).

The sweep is :func:`hooklab.cam.sweep.sweep`, the checkpoints and their CAMs
:mod:`hooklab.studies.cam_training`, the figures :mod:`hooklab.charts.sweep` and
:mod:`hooklab.charts.cam_training`. Long work runs inside ``st.status``; every error goes through
:func:`dashboard.state.guard` (one ``st.error``). Results are cached per model, input and
settings, and kept in the session so moving a slider does not recompute them.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
import torch

from dashboard import state
from dashboard.components import cam as camui
from dashboard.components.cam import Model
from dashboard.components.pickers import InputChoice
from dashboard.i18n import t
from hooklab.cam import engine as camlib
from hooklab.cam import sweep as sweeplib
from hooklab.charts import cam_training as train_charts
from hooklab.charts import sweep as sweep_charts
from hooklab.data import datasets as datalib
from hooklab.studies import cam_training
from hooklab.studies.train import TrainConfig

TRAIN_STEPS = [0, 1, 2, 5, 12, 28, 65, 150]  # checkpoint_steps(150): dense early


def _title(m: str) -> str:
    return camlib.METHODS[m].title


@st.cache_data(show_spinner=False, max_entries=16)
def _sweep(model_key: str, digest: str, methods: tuple[str, ...], steps: int, _model: Model,
           _x: torch.Tensor, _masks: torch.Tensor | None) -> sweeplib.SweepResult:
    with _model.lock:
        return sweeplib.sweep(_model.net, _x, masks=_masks, methods=list(methods), steps=steps)


def _sweep_images(model: Model, sample: InputChoice, n: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """This image, or the first ``n`` shapes test images (with masks) for a shapes model."""
    shapes_model = tuple(model.info.class_names) == tuple(datalib.SHAPE_CLASSES)
    if n > 1 and shapes_model:
        data = datalib.make_shapes(n, 0, "test")
        return data.images, data.masks, t(f"the first {n} shapes test images",
                                          f"前 {n} 张 shapes 测试图像")
    mask = torch.from_numpy(sample.mask)[None] if sample.mask is not None else None
    return sample.x, mask, t("this image", "此图像")


def _use_layer(layer: str) -> None:
    st.session_state["gradcam_layer"] = layer  # a callback: runs before the form is drawn


def sweep_section(model: Model, sample: InputChoice, layer_options: list[str]) -> None:
    """Every candidate layer × the chosen methods, scored and ranked; "use this layer"."""
    st.markdown(t("Which layer should the CAM use? Every candidate layer (one per output "
                  "resolution) × the chosen methods, scored by deletion / insertion AUC, Average "
                  "Drop and the pointing game. **Ranking**: mean (insertion − deletion) over the "
                  "methods, ties by the lower Average Drop.",
                  "CAM 应该用哪一层？每个候选层（每种输出分辨率一层）× 所选方法，按删除 / 插入 AUC、"
                  "平均下降和指向游戏打分。**排名**：各方法（插入 − 删除）的平均值，平局时平均下降"
                  "较低者优先。"))
    options = sweeplib.default_methods()
    c1, c2, c3 = st.columns([3, 1, 1])
    methods = c1.multiselect(t("Methods", "方法"), list(camlib.METHODS),
                             default=[m for m in ("gradcam", "hirescam", "layercam", "eigencam")
                                      if m in options] or options[:3],
                             format_func=_title, key="gradcam_sweep_methods")
    n = c2.select_slider(t("Images", "图像数"), [1, 4, 8, 16], value=8, key="gradcam_sweep_n")
    steps = c3.select_slider(t("Curve steps", "曲线步数"), [8, 16, 32], value=16,
                             key="gradcam_sweep_steps")
    if not methods:
        st.info(t("Pick at least one method.", "请至少选择一个方法。"))
        return
    x, masks, what = _sweep_images(model, sample, int(n))
    settings = (model.choice.key, camui._digest(x), tuple(methods), int(steps))
    if st.button(t("Run the layer sweep", "运行层扫描"), key="gradcam_sweep_run"):
        with st.status(t("Scoring every layer × method…", "为每个层 × 方法打分…"),
                       expanded=False) as status, state.guard(t("Layer sweep", "层扫描")):
            res = _sweep(*settings, model, x, masks)
            status.update(label=t("Layer sweep done.", "层扫描完成。"), state="complete")
        st.session_state["gradcam_sweep"] = {"settings": settings, "result": res, "what": what}
    done = st.session_state.get("gradcam_sweep")
    if not done or done["settings"][0] != model.choice.key:
        st.caption(t("Press the button: a few seconds for the SimpleCNN.",
                     "点击按钮：SimpleCNN 需要几秒。"))
        return
    if done["settings"] != settings:
        st.caption(t("Settings changed: press the button again to update.",
                     "设置已改变：再次点击按钮以更新。"))
    res: sweeplib.SweepResult = done["result"]
    st.success(t(f"Recommended layer: **{res.recommended}** — {res.reason}",
                 f"推荐层：**{res.recommended}** —— {res.reason}"))
    if res.recommended in layer_options:
        st.button(t(f"Use this layer ({res.recommended})", f"使用此层（{res.recommended}）"),
                  key="gradcam_sweep_use", on_click=_use_layer, args=(res.recommended,))
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(sweep_charts.sweep_heatmap(
            res.table, layers=list(res.layers["layer"]), methods=list(res.methods),
            method_titles={m: _title(m) for m in res.methods},
            colorbar_title=t("insertion − deletion", "插入 − 删除")),
            width="stretch", key="gradcam_sweep_fig")
    with right:
        st.dataframe(res.layers, hide_index=True, width="stretch")
        st.caption(t(f"On {done['what']}; random map: insertion − deletion "
                     f"{res.random['score']:.3f}.",
                     f"在{done['what']}上；随机图：插入 − 删除 {res.random['score']:.3f}。"))
    with st.expander(t("Every layer × method", "每个层 × 方法")):
        st.dataframe(res.table, hide_index=True, width="stretch")


@st.cache_resource(show_spinner=False, max_entries=8)
def _checkpoints(config_json: str, steps: tuple[int, ...], _progress: Any = None
                 ) -> cam_training.Checkpoints:
    import json

    return cam_training.train_checkpoints(TrainConfig.from_dict(json.loads(config_json)),
                                          list(steps), _progress)


def _cached_checkpoints(config: TrainConfig, steps: Any, progress: Any
                        ) -> cam_training.Checkpoints:
    import json

    return _checkpoints(json.dumps(config.to_dict(), sort_keys=True), tuple(steps), progress)


def training_section(alpha: float) -> None:
    """The same images' CAMs at chosen training steps, as an animation with a step slider."""
    st.markdown(t("How does the map form while the model learns? The same test images' CAMs at "
                  "chosen training steps (0 is the untrained model). In the **bias experiment** "
                  "the corner marker names the class in 95% of the training images: watch the "
                  "maps move from the shape to the marker as the model learns the shortcut.",
                  "模型学习时热力图如何形成？同一批测试图像在选定训练步的 CAM（0 为未训练的模型）。"
                  "在**偏差实验**中，95% 的训练图像里角落标记说明类别：看热力图随着模型学到捷径"
                  "从形状移到标记上。"))
    kinds = {"bias": t("Bias experiment (biased arm)", "偏差实验（有偏模型）"),
             "shapes": t("Shapes training", "Shapes 训练")}
    c1, c2 = st.columns(2)
    kind = c1.radio(t("Training", "训练"), list(kinds), format_func=kinds.get, horizontal=True,
                    key="gradcam_train_kind")
    methods = [m for m, spec in camlib.METHODS.items() if not spec.needs_model]
    method = c2.selectbox(t("CAM method", "CAM 方法"), methods, format_func=_title,
                          index=methods.index("hirescam") if "hirescam" in methods else 0,
                          key="gradcam_train_method")
    settings = (kind, method)
    if st.button(t("Train and animate", "训练并生成动画"), key="gradcam_train_run"):
        with st.status(t("Training and keeping checkpoints (cached after the first time)…",
                         "训练并保存检查点（首次之后会缓存）…"), expanded=True) as status, \
                state.guard(t("CAMs over training", "训练过程中的 CAM")):
            bar = st.progress(0.0)

            def progress(step: int, total: int, _info: dict) -> None:
                bar.progress(min(1.0, step / max(total, 1)), text=f"{step}/{total}")

            st.session_state["gradcam_train"] = {"settings": settings,
                                                 **_animation(kind, method, progress)}
            status.update(label=t("Trained; CAMs computed.", "训练完成；CAM 已计算。"),
                          state="complete", expanded=False)
    done = st.session_state.get("gradcam_train")
    if not done:
        st.caption(t("Press the button: the training takes seconds and is cached.",
                     "点击按钮：训练只需几秒，并会缓存。"))
        return
    if done["settings"] != settings:
        st.caption(t("Settings changed: press the button again to update.",
                     "设置已改变：再次点击按钮以更新。"))
    cams = done["cams"]
    st.plotly_chart(train_charts.training_animation(
        done["images"], cams.maps.numpy(), cams.steps, done["titles"], alpha=alpha,
        step_label=t("step", "步"), captions=done["captions"]),
        width="stretch", key="gradcam_train_fig")
    if len(cams.scores):
        sc = cams.scores
        st.plotly_chart(train_charts.location_curves(sc["step"], {
            t("max on the marker", "最大值在标记上"): sc["on_cue"],
            t("max on the shape", "最大值在形状上"): sc["on_object"],
            t("predicts the marker's class", "预测为标记的类别"): sc["follows_cue"],
            t("accuracy", "准确率"): sc["accuracy"]},
            x_title=t("training step", "训练步"), y_title=t("fraction", "比例")),
            width="stretch", key="gradcam_train_curves")
    st.caption(t(f"{cams.method} at {cams.layer}, each checkpoint's predicted class. "
                 "Press ▶ or drag the slider.",
                 f"{cams.method}，层 {cams.layer}，每个检查点的预测类别。点击 ▶ 或拖动滑块。"))


def _animation(kind: str, method: str, progress: Any) -> dict[str, Any]:
    """The frames' data: images, titles, captions and the :class:`TrainingCams`."""
    names = camui.class_names(datalib.SHAPE_CLASSES)
    if kind == "bias":
        cams, test, idx = cam_training.bias_over_training(
            steps=TRAIN_STEPS, method=method, progress=progress,
            checkpoints=_cached_checkpoints)
        images = [datalib.to_display(test.images[i]) for i in idx]
        titles = [f"{names[int(test.labels[i])]} · {t('marker', '标记')} "
                  f"{names[int(test.cue_labels[i])]}" for i in idx]
        captions = [t(f"step {s}: max on the marker {c:.0%}, follows the marker {f:.0%}",
                      f"第 {s} 步：最大值在标记上 {c:.0%}，跟随标记 {f:.0%}")
                    for s, c, f in zip(cams.scores["step"], cams.scores["on_cue"],
                                       cams.scores["follows_cue"], strict=True)]
        return {"cams": cams, "images": images, "titles": titles, "captions": captions}
    ck = _cached_checkpoints(TrainConfig(), TRAIN_STEPS, progress)
    data = datalib.make_shapes(6, 0, "test")
    cams = cam_training.cams_over_training(ck, data.images, method=method)
    labels = data.labels
    captions = [t(f"step {s}: {int((p == labels).sum())} of {len(labels)} right",
                  f"第 {s} 步：{len(labels)} 张中对 {int((p == labels).sum())} 张")
                for s, p in zip(cams.steps, cams.preds, strict=True)]
    return {"cams": cams, "images": [datalib.to_display(x) for x in data.images],
            "titles": [names[int(v)] for v in labels], "captions": captions}
