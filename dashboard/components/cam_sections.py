"""The Grad-CAM page's further sections: methods side by side, the class gallery, faithfulness
metrics and the bias experiment (layout only; moved out of :mod:`dashboard.views.gradcam` so
no file grows past ~300 lines; every widget key is the page's own, unchanged).

CAMs come from :mod:`hooklab.cam.engine`, metrics from :mod:`hooklab.cam.metrics`, the bias
experiment from :mod:`hooklab.studies.bias`, figures from :mod:`hooklab.charts.cam`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from dashboard import state
from dashboard.components import cam as camui
from dashboard.components import pickers
from dashboard.components.cam import Model, compute
from dashboard.components.pickers import InputChoice
from dashboard.i18n import t
from hooklab.cam import engine as camlib
from hooklab.cam import metrics
from hooklab.charts import cam as charts
from hooklab.core.errors import HooklabError
from hooklab.data import datasets as datalib
from hooklab.models import inputs
from hooklab.studies import bias

#: The side-by-side default: the seven classic methods (about a second at 32 px). The others
#: (AblationCAM, SS-CAM, IS-CAM ... cost tens to hundreds of forwards) are one click away.
DEFAULT_METHODS = [m for m in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam",
                               "scorecam", "eigencam") if m in camlib.METHODS]


#: Above this many input pixels the default leaves out the methods that run the model again
#: (Score-CAM on a 224 px ViT-B/16 or ResNet is hundreds of full forwards: minutes on a CPU).
SMALL_INPUT_PIXELS = 64 * 64


def default_methods(x) -> list[str]:
    """The side-by-side default for input ``x``: the classic seven, without the model-calling
    ones (Score-CAM) when the input is large."""
    if int(x.shape[-2]) * int(x.shape[-1]) <= SMALL_INPUT_PIXELS:
        return list(DEFAULT_METHODS)
    return [m for m in DEFAULT_METHODS if not camlib.METHODS[m].needs_model]


def methods_section(model: Model, sample: InputChoice, res: camlib.CamResult, target: int,
                    alpha: float) -> None:
    default = default_methods(sample.x)
    if len(default) < len(DEFAULT_METHODS):
        st.caption(t("Score-CAM is left out by default at this input size (it runs the model once "
                     "per channel); add it below if you want to wait.",
                     "此输入尺寸下默认不含 Score-CAM（每个通道运行一次模型）；需要时可在下方添加。"))
    # A keyed multiselect keeps its value when its default changes: after the 32 px default
    # model (Score-CAM in) a switch to a 224 px model would keep Score-CAM, hundreds of full
    # forwards. The selection follows the default whenever the default changes.
    if st.session_state.get("gradcam_methods_default") != default:
        st.session_state["gradcam_methods_default"] = default
        st.session_state["gradcam_methods"] = list(default)
    chosen = st.multiselect(t("Methods", "方法"), list(camlib.METHODS),
                            format_func=lambda m: camlib.METHODS[m].title, key="gradcam_methods")
    raw = st.toggle(t("Raw maps instead of overlays", "显示原始热力图而非叠加图"),
                    key="gradcam_raw")
    if not chosen:
        st.info(t("Pick at least one method.", "请至少选择一个方法。"))
        return
    maps, skipped = {}, {}
    with state.guard(t("Computing the methods", "计算各方法")):
        for m in chosen:
            try:
                maps[camlib.METHODS[m].title] = camui.method_map(model, sample.x, m, res.layer,
                                                                 int(target))
            except HooklabError as exc:  # a method this model cannot have (attention on a CNN)
                skipped[camlib.METHODS[m].title] = str(exc).splitlines()[0]
    if skipped:
        st.info(t("Not available for this model: ", "此模型不适用：")
                + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    if not maps:
        return
    st.plotly_chart(charts.method_grid(sample.display, maps, alpha=alpha, show_overlay=not raw),
                    width="stretch", key="gradcam_methods_fig")
    st.caption(t(f"{len(maps)} of the {len(camlib.METHODS)} methods, all at layer {res.layer}, "
                 "for the same class.",
                 f"{len(camlib.METHODS)} 种方法中的 {len(maps)} 种，均在层 {res.layer}，同一类别。"))


def gallery_section(model: Model, names: list[str], layer: str, method: str,
                    alpha: float) -> None:
    info = model.info
    if tuple(info.class_names) not in (tuple(datalib.SHAPE_CLASSES),) and not (
            tuple(info.class_names) == tuple(datalib.CIFAR10_CLASSES)
            and pickers.cifar_available()):
        st.info(t("The class gallery needs labelled images of the model's classes: the shapes "
                  "model, or a CIFAR-10 model with a local CIFAR-10 copy.",
                  "类别图库需要与模型类别对应的带标签图像：shapes 模型，"
                  "或有本地 CIFAR-10 的 CIFAR-10 模型。"))
        return
    which_names = {"true": t("true class", "真实类别"), "pred": t("predicted class", "预测类别")}
    which = st.radio(t("Map for", "热力图针对"), list(which_names), horizontal=True,
                     format_func=which_names.get, key="gradcam_gallery_target")
    with state.guard(t("Building the gallery", "生成图库")):
        cifar = None if tuple(info.class_names) == tuple(datalib.SHAPE_CLASSES) \
            else pickers.cifar_test()
        samples = inputs.class_samples(info, cifar)
        xs = torch.cat([s.x for s in samples])
        labels = [int(s.label) for s in samples]
        r = compute(model, xs, method, layer, labels if which == "true" else None)
    preds = r.logits.argmax(1).tolist() if r.logits is not None else [-1] * len(samples)
    titles = [f"{names[lab]} → {names[p] if 0 <= p < len(names) else '?'}"
              for lab, p in zip(labels, preds, strict=True)]
    st.plotly_chart(charts.gallery([s.image for s in samples], list(r.maps.numpy()), titles,
                                   alpha=alpha, cols=5), width="stretch", key="gradcam_gallery")
    st.caption(t("One test image per class: true → predicted.",
                 "每个类别一张测试图像：真实 → 预测。"))


def metrics_section(model: Model, sample: InputChoice, res: camlib.CamResult, pick: int) -> None:
    """Faithfulness of the shown map (and of a random map, the baseline) on this image."""
    steps = st.select_slider(t("Curve steps", "曲线步数"), [8, 16, 32, 64], value=32,
                             key="gradcam_steps")
    x = sample.x
    target = res.targets[pick:pick + 1]
    mask = torch.from_numpy(sample.mask)[None] if sample.mask is not None else None
    with state.guard(t("Computing the metrics", "计算指标")), model.lock:
        scores, curves = metrics.evaluate_with_curves(model.net, x, res.maps[pick:pick + 1],
                                                      target, mask, steps=int(steps))
    labels = {"average_drop": "AD % ↓", "increase_confidence": "IC % ↑",
              "deletion_auc": t("deletion AUC ↓", "删除 AUC ↓"),
              "insertion_auc": t("insertion AUC ↑", "插入 AUC ↑"),
              "pointing": t("pointing game ↑", "指向游戏 ↑")}
    names = {"cam": t("this CAM", "此 CAM"), "random": t("random map", "随机图")}
    rows = {names[k]: ({labels[c]: v for c, v in row.items()}, curves[k])
            for k, row in scores.items()}
    first = curves["cam"]
    c1, c2 = st.columns([3, 2])
    with c1:
        st.plotly_chart(charts.deletion_insertion(
            first.fractions, first.deletion[0], first.insertion[0],
            names=(t("Deletion", "删除"), t("Insertion", "插入")),
            x_title=t("fraction of pixels (most salient first)", "像素比例（按显著性从高到低）"),
            y_title=t("target-class probability", "目标类别概率")),
            width="stretch", key="gradcam_curves")
    with c2:
        st.dataframe(pd.DataFrame({k: v[0] for k, v in rows.items()}).T, width="stretch")
        st.caption(t("AD: average drop of confidence on map⊙image; IC: whether it rises. "
                     "Deletion: remove the most salient pixels first (a fast drop is good); "
                     "insertion: add them first (a fast rise is good). Pointing game: is the "
                     "map's maximum on the object (shapes masks)?",
                     "AD：在 图⊙图像 上置信度的平均下降；IC：是否上升。删除：先去掉最显著的像素"
                     "（下降越快越好）；插入：先加入它们（上升越快越好）。指向游戏：图的最大值是否落在物体上。"))
    if st.toggle(t("Compare every method on this image", "在此图像上比较所有方法"),
                 key="gradcam_all_methods"):
        with state.guard(t("Comparing methods", "比较方法")), model.lock:
            table = metrics.compare_methods(model.net, x, mask, layer=res.layer,
                                            target=[int(target[0])], steps=int(steps))
        st.dataframe(table, hide_index=True, width="stretch")
        cols = [c for c in ("deletion_auc", "insertion_auc", "pointing") if c in table.columns]
        st.plotly_chart(charts.metric_bars({c: dict(zip(table["method"], table[c], strict=True))
                                            for c in cols}),
                        width="stretch", key="gradcam_metric_bars")


def bias_section(alpha: float) -> None:
    """The seed's bias remark, runnable: a model trained where a corner marker gives the class
    away vs one trained on rebalanced data; where do their CAMs point?"""
    st.markdown(t("Two SimpleCNNs learn the shapes with a coloured **corner marker** (the cue). "
                  "In the *biased* training set the marker names the class most of the time; in "
                  "the *rebalanced* one it is independent of the class. On test images the marker "
                  "is random. A model that learned the shortcut looks at the corner.",
                  "两个 SimpleCNN 学习带有彩色**角落标记**（线索）的形状。*有偏*训练集中标记大多"
                  "直接说明类别；*重新平衡*的训练集中标记与类别无关。测试图像中标记是随机的。"
                  "学到捷径的模型会看向角落。"))
    c1, c2, c3 = st.columns(3)
    cue_prob = c1.slider(t("Biased set: P(marker names the class)", "有偏集：标记说明类别的概率"),
                         0.5, 1.0, 0.95, 0.05, key="gradcam_bias_p")
    n_test = c2.select_slider(t("Test images", "测试图像数"), [200, 500, 1000], value=500,
                              key="gradcam_bias_n")
    methods = list(camlib.METHODS)
    method = c3.selectbox(t("CAM method", "CAM 方法"), methods, index=methods.index("hirescam"),
                          format_func=lambda m: camlib.METHODS[m].title, key="gradcam_bias_m",
                          help=t("HiResCAM is exact for the SimpleCNN's fully connected head. "
                                 "Grad-CAM averages the gradient over the whole map and misses "
                                 "the small marker the biased model relies on: try it.",
                                 "HiResCAM 对 SimpleCNN 的全连接头是精确的。Grad-CAM 在整张图上"
                                 "平均梯度，会漏掉有偏模型所依赖的小标记：试试看。"))
    settings = (float(cue_prob), int(n_test), method)
    done = st.session_state.get("gradcam_bias")
    if st.button(t("Run the bias experiment", "运行偏差实验"), key="gradcam_bias_run"):
        models: dict[str, torch.nn.Module] = {}
        with st.status(t("Training the two models (cached after the first time)…",
                         "训练两个模型（首次之后会缓存）…"), expanded=True) as status:
            bar = st.progress(0.0)

            def fit(arm: str, p: float) -> torch.nn.Module:
                def progress(step: int, total: int, info: dict[str, float]) -> None:
                    loss = info.get("loss")
                    bar.progress(min(1.0, step / max(total, 1)),
                                 text=f"{arm}: {step}/{total}" + (f" · loss {loss:.3f}"
                                                                  if loss is not None else ""))
                models[arm] = bias.train_arm(arm, p, progress=progress)
                return models[arm]

            with state.guard(t("Bias experiment", "偏差实验")):
                result = bias.run_bias_experiment(int(n_test), biased_cue_prob=float(cue_prob),
                                                  method=method, train_fn=fit)
            status.update(label=t("Trained and evaluated.", "训练和评估完成。"), state="complete",
                          expanded=False)
        done = {"settings": settings, "result": result, "models": models}
        st.session_state["gradcam_bias"] = done
    if not done:
        st.caption(t("Press the button: training takes a few seconds per model the first time.",
                     "点击按钮：首次训练每个模型需要几秒。"))
        return
    if done["settings"] != settings:
        st.caption(t("Settings changed: press the button again to update.",
                     "设置已改变：再次点击按钮以更新。"))
    result, models = done["result"], done["models"]
    table = result.table()
    names = {"on_cue": t("max on the marker", "最大值在标记上"),
             "on_object": t("max on the shape", "最大值在形状上"),
             "elsewhere": t("max elsewhere", "最大值在别处")}
    left, right = st.columns([2, 3])
    with left:
        st.plotly_chart(charts.metric_bars({names[c]: dict(zip(table["arm"], table[c],
                                                               strict=True))
                                            for c in ("on_cue", "on_object", "elsewhere")}),
                        width="stretch", key="gradcam_bias_bars")
    with right:
        shown = table[["arm", "accuracy", "accuracy_conflict", "follows_cue", "on_cue",
                       "on_object"]].rename(columns={
                           "arm": t("model", "模型"), "accuracy": t("accuracy", "准确率"),
                           "accuracy_conflict": t("accuracy, marker ≠ class",
                                                  "准确率（标记≠类别）"),
                           "follows_cue": t("predicts the marker's class", "预测为标记的类别"),
                           "on_cue": names["on_cue"], "on_object": names["on_object"]})
        st.dataframe(shown, hide_index=True, width="stretch")
        n = int(table["n"].iloc[0]) if len(table) else 0
        st.caption(t(f"{n} test images, {result.method} at {result.layer}; where each CAM's "
                     "maximum lies.",
                     f"{n} 张测试图像，{result.method}，层 {result.layer}；"
                     "统计每个 CAM 最大值的位置。"))
    test = datalib.make_biased_shapes(int(done["settings"][1]), split="test")
    idx = inputs.conflict_examples(test, 6)
    x = test.images[idx]
    images = [datalib.to_display(x[i]) for i in range(len(idx))]
    rows = {}
    with state.guard(t("CAMs of both models", "两个模型的 CAM")):
        for arm, m in models.items():
            rows[t("biased", "有偏") if arm == "biased" else t("rebalanced", "重新平衡")] = \
                list(camlib.compute(m, x, method=result.method).maps.numpy())
    shape_names = camui.class_names(datalib.SHAPE_CLASSES)
    titles = [f"{shape_names[int(test.labels[i])]}<br>{t('marker', '标记')}: "
              f"{shape_names[int(test.cue_labels[i])]}" for i in idx]
    if rows:
        st.plotly_chart(charts.rows_grid(images, rows, titles, alpha=alpha),
                        width="stretch", key="gradcam_bias_grid")
        st.caption(t("Test images whose marker names another class (class, then the marker's "
                     "class), with each model's CAM of its predicted class.",
                     "标记指向其他类别的测试图像（类别，以及标记所指的类别），"
                     "以及每个模型对其预测类别的 CAM。"))
