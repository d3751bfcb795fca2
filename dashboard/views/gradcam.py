"""Grad-CAM: where a classifier looks.

The seed's three panels (original, jet heatmap, overlay ``0.4·jet + 0.6·image`` with an opacity
slider), several CAM methods side by side, target layer (automatic by default) and class
(predicted, chosen, top-k), a class-wise gallery, faithfulness metrics, the bias experiment,
downloads, and "Save run". ``/gradcam?run=<id>`` shows a saved run, re-rendered from its stored
activations and gradients (no model needed except for Score-CAM).

Layout only: CAMs come from :mod:`hooklab.cam.engine`, inputs from :mod:`hooklab.models.inputs`,
stored runs from :mod:`hooklab.cam.runs`, figures from :mod:`hooklab.charts.cam`; the page's
cached controls are :mod:`dashboard.components.cam`, open/save/share :mod:`~.run_flow`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dashboard import state
from dashboard.components import cam as camui
from dashboard.components import pickers, run_flow
from dashboard.components.cam import Model, compute, wrap
from dashboard.components.pickers import InputChoice
from dashboard.components.text import plain
from dashboard.i18n import t
from hooklab.cam import engine as camlib
from hooklab.cam import metrics
from hooklab.cam import runs as cam_runs
from hooklab.charts import cam as charts
from hooklab.data import datasets as datalib
from hooklab.models import inputs
from hooklab.studies import bias

log = logging.getLogger(__name__)

PAGE = "gradcam"
SEED_TEST_INDEX = 102  # the seed's CIFAR-10 test image
DEFAULT_METHODS = list(camlib.METHODS)  # all seven side by side (Score-CAM: ~0.1-0.7 s at 32x32)


# -- views ----------------------------------------------------------------------------------------

def panel_titles(true_name: str | None = None, target_name: str | None = None,
                 method: str = "Grad-CAM") -> tuple[str, str, str]:
    """The seed's panel titles: ``原始图像: 猫``, ``Grad-CAM热力图: 猫``, ``叠加热力图``.

    ``true_name`` is the input's class (left out when it is unknown), ``target_name`` the class
    whose map is shown, ``method`` the CAM method's title.
    """
    original = t("Original", "原始图像") + (f": {true_name}" if true_name else "")
    heat = t(f"{method} heatmap", f"{method}热力图") + (f": {target_name}" if target_name else "")
    return original, heat, t("Overlay", "叠加热力图")


def show_panels(image: np.ndarray, cam: np.ndarray, alpha: float, target_name: str,
                key: str, true_name: str | None = None, method: str = "Grad-CAM") -> None:
    fig = charts.three_panels(image, cam, alpha=alpha,
                              titles=panel_titles(true_name, target_name, method))
    st.plotly_chart(fig, width="stretch", key=key)
    st.caption(t(f"CAM for class **{plain(target_name)}**. Overlay = {alpha:.2f}·jet(CAM) + "
                 f"{1 - alpha:.2f}·image (the seed uses 0.4 / 0.6).",
                 f"类别 **{plain(target_name)}** 的 CAM。叠加 = {alpha:.2f}·jet(CAM) + "
                 f"{1 - alpha:.2f}·图像（原课程用 0.4 / 0.6）。"))


def downloads(image: np.ndarray, cam: np.ndarray, maps: np.ndarray, alpha: float, stem: str,
              key: str) -> None:
    c1, c2 = st.columns(2)
    scale = max(1, 256 // max(image.shape[:2]))
    c1.download_button(t("Download overlay (PNG)", "下载叠加图（PNG）"),
                       data=charts.overlay_png(image, cam, alpha, scale=scale),
                       file_name=f"{stem}-overlay.png", mime="image/png", key=f"{key}_png")
    c2.download_button(t("Download CAM array (.npy)", "下载 CAM 数组（.npy）"),
                       data=charts.cam_npy(maps), file_name=f"{stem}-cam.npy",
                       mime="application/octet-stream", key=f"{key}_npy")


def saved_run_view(run_id: str, trace) -> None:
    """``?run=<id>``: the stored run, re-rendered from its activation and gradient."""
    meta = trace.meta
    cam_meta = meta.get("cam") or {}
    if meta.get("page") != PAGE or not cam_meta:
        run_flow.banner(run_id, trace)
        st.error(t(f"Run {run_id} was not made on the Grad-CAM page; open it on the Runs page.",
                   f"运行 {run_id} 不是在 Grad-CAM 页面生成的；请在运行记录页面打开。"))
        run_flow.share_box(run_id, "runs")
        run_flow.leave_button(PAGE)
        return
    with state.guard(t("Opening the saved run", "打开保存的运行")):
        manifest = state.store().manifest(run_id)
    who = plain(manifest.get("author")) or "?"  # a run's fields as text (components/text.py)
    when = plain(str(manifest.get("created", ""))[:19].replace("T", " "))
    st.info(t(f"Saved run {run_id} by {who} ({when} UTC)",
              f"保存的运行 {run_id}，作者 {who}（{when} UTC）"))
    if manifest.get("notes"):
        st.markdown(f"**{t('Notes', '备注')}:** {plain(manifest['notes'])}")
    method, layer = cam_meta.get("method", "gradcam"), cam_meta.get("layer")
    mean = tuple(cam_meta.get("mean", datalib.SEED_MEAN))
    std = tuple(cam_meta.get("std", datalib.SEED_STD))
    names = camui.class_names(cam_meta.get("class_names") or [])
    target = int(cam_meta.get("target", -1))
    title = camlib.METHODS[camlib.method_name(method)].title
    with state.guard(t("Re-rendering the saved CAM", "重新绘制保存的 CAM")):
        x = cam_runs.model_input(trace)
        pixels = datalib.denormalise(x[0], mean, std).numpy()
        image = charts.as_rgb(pixels[0] if pixels.shape[0] == 1 else pixels)
        model = None
        if camlib.method_name(method) == "scorecam":
            spec = cam_meta.get("model_spec") or {}
            if str(spec.get("weights", "")).startswith("upload:"):
                raise camlib.CamError("Score-CAM needs the model, and this run used uploaded "
                                      "weights that are not stored with it")
            model = pickers.load_model(spec)
            with model.lock:
                res = cam_runs.rerender(trace, layer, method, model.model, target)
            how = t("recomputed with the model (Score-CAM needs it)",
                    "用模型重新计算（Score-CAM 需要模型）")
        else:
            res = cam_runs.rerender(trace, layer, method)
            how = t("re-rendered from the stored activation and gradient (no model needed)",
                    "由保存的激活和梯度重新绘制（不需要模型）")
    tname = names[target] if 0 <= target < len(names) else str(target)
    label = cam_meta.get("label")
    true_name = names[int(label)] if label is not None and 0 <= int(label) < len(names) else None
    mname, wname = plain(meta.get("model", "?")), plain(cam_meta.get("weights", "?"))
    lname, iname = plain(layer), plain(cam_meta.get("input", "?"))
    st.caption(t(f"Model **{mname}** ({wname}), method "
                 f"**{title}**, layer **{lname}**, input {iname} — {how}.",
                 f"模型 **{mname}**（{wname}），方法 "
                 f"**{title}**，层 **{lname}**，输入 {iname} —— {how}。"))
    alpha = st.slider(t("Heatmap opacity", "热力图不透明度"), 0.0, 1.0,
                      float(cam_meta.get("alpha", 0.4)), 0.05, key="gradcam_run_alpha")
    cam = res.maps[0].numpy()
    show_panels(image, cam, alpha, tname, key="gradcam_run_panels", true_name=true_name,
                method=title)
    downloads(image, cam, res.maps.numpy(), alpha, run_id, key="gradcam_run_dl")
    run_flow.share_box(run_id, PAGE)
    run_flow.leave_button(PAGE)


def main() -> None:
    st.title("Grad-CAM")
    st.caption(t("Where does the classifier look? Gradients of the class score at a convolutional "
                 "layer weight its feature maps: CAM = ReLU(Σₖ αₖ Aᵏ), αₖ = mean of ∂y/∂Aᵏ.",
                 "分类器在看哪里？类别得分在卷积层上的梯度给特征图加权：CAM = ReLU(Σₖ αₖ Aᵏ)，"
                 "αₖ 为 ∂y/∂Aᵏ 的均值。"))
    if st.query_params.get("run"):
        opened = run_flow.open_run()
        if opened is not None:
            saved_run_view(*opened)
            return

    c1, c2 = st.columns([1, 2])
    with c1, state.guard(t("Loading the model", "加载模型")):
        model = wrap(pickers.model_picker("gradcam", seed_recipe=True))
        spatial, auto = camui.spatial_layers(model.choice.key, model.net,
                                             tuple(model.info.input_shape))
    info = model.info
    names = camui.class_names(info.class_names)
    if st.session_state.get("gradcam_model_key") != model.choice.key:
        if "gradcam_model_key" in st.session_state:  # another model: its own automatic layer
            st.session_state["gradcam_layer"] = "auto"  # (set, so the browser shows the label)
        st.session_state["gradcam_model_key"] = model.choice.key
        if model.choice.weights == pickers.SEED_RECIPE:  # the seed's own model and input
            st.session_state["gradcam_source"] = "cifar10"
            if st.session_state.get("gradcam_index", SEED_TEST_INDEX) != SEED_TEST_INDEX:
                st.session_state["gradcam_index"] = SEED_TEST_INDEX  # else the default is it

    sources = ["shapes", "cifar10", "upload", "random"] if pickers.cifar_available() else \
        ["shapes", "upload", "random"]
    source_names = {"shapes": t("Shapes sample", "Shapes 样本"),
                    "cifar10": t("CIFAR-10 sample", "CIFAR-10 样本"),
                    "upload": t("Upload an image", "上传图像"), "random": t("Random", "随机")}
    methods = list(camlib.METHODS)
    mode_names = {"pred": t("Predicted class", "预测类别"),
                  "class": t("Chosen class", "指定类别"), "topk": t("Top-k", "前 k 个")}
    with c2.form("gradcam_form", border=True):
        f1, f2, f3 = st.columns(3)
        source = f1.radio(t("Input", "输入"), sources, format_func=source_names.get,
                          key="gradcam_source", horizontal=True)
        index = f1.number_input(t("Sample index / random seed", "样本编号 / 随机种子"), 0, 9999,
                                SEED_TEST_INDEX, key="gradcam_index")
        with f1.expander(t("Image file (for “Upload”)", "图像文件（用于“上传”）")):
            image_file = st.file_uploader(t("Image", "图像"), key="gradcam_image")
        method = f2.selectbox(t("Method", "方法"), methods, key="gradcam_method",
                              format_func=lambda m: camlib.METHODS[m].title)
        layer_names = {"auto": t(f"automatic ({auto})", f"自动（{auto}）"),
                       **{n: n for n in spatial}}
        layer = f2.selectbox(t("Target layer", "目标层"), list(layer_names), key="gradcam_layer",
                             format_func=layer_names.get)
        mode = f3.radio(t("Class", "类别"), list(mode_names), format_func=mode_names.get,
                        key="gradcam_mode", horizontal=True)
        chosen = f3.selectbox(t("Chosen class", "指定类别"), range(len(names)),
                              format_func=lambda i: names[i], key="gradcam_class")
        k = f3.number_input("k", 1, min(10, len(names)), min(3, len(names)), key="gradcam_k")
        st.form_submit_button(t("Run Grad-CAM", "运行 Grad-CAM"), type="primary",
                              key="gradcam_run")

    if source == "upload" and image_file is None:
        st.info(t("Choose an image file above, then press “Run Grad-CAM”.",
                  "请在上方选择图像文件，然后点击“运行 Grad-CAM”。"))
        st.stop()
    sample = camui.make_input(source, index, model, image_file)
    target: Any = {"pred": None, "class": int(chosen), "topk": f"topk:{int(k)}"}[mode]
    with state.guard(t("Computing the CAM", "计算 CAM")):
        res = compute(model, sample.x, method, None if layer == "auto" else layer, target)
    targets = [int(v) for v in res.targets]
    pick = 0
    if mode == "topk" and len(targets) > 1:
        pick = c1.radio(t("Show the map of", "显示该类别的图"), range(len(targets)),
                        format_func=lambda i: f"#{i + 1} {names[targets[i]]}", horizontal=True,
                        key="gradcam_pick")
    tname = names[targets[pick]] if 0 <= targets[pick] < len(names) else str(targets[pick])
    alpha = c1.slider(t("Heatmap opacity", "热力图不透明度"), 0.0, 1.0, 0.4, 0.05,
                      key="gradcam_alpha")
    cam = res.maps[pick].numpy()
    left, right = st.columns([3, 1])
    truth = names[sample.label] if sample.label is not None and sample.label < len(names) \
        else None
    with left:
        show_panels(sample.display, cam, alpha, tname, key="gradcam_panels", true_name=truth,
                    method=camlib.METHODS[res.method].title)
    with right:
        if res.logits is not None:
            labels, probs, idx = charts.topk(res.logits[0].numpy(), names, k=min(5, len(names)))
            hi = idx.index(targets[pick]) if targets[pick] in idx else None
            st.plotly_chart(charts.topk_bar(labels, probs, highlight=hi,
                                            x_title=t("probability", "概率")),
                            width="stretch", key="gradcam_topk")
        st.markdown(f"**{t('Input', '输入')}:** {plain(sample.description)}  \n"
                    f"**{t('True class', '真实类别')}:** {truth or '—'}  \n"
                    f"**{t('Layer', '层')}:** {res.layer}  \n"
                    f"**{t('Method', '方法')}:** {camlib.METHODS[res.method].title}")
    downloads(sample.display, cam, res.maps.numpy(), alpha, f"gradcam-{res.method}",
              key="gradcam_dl")
    settings = {"model": dict(model.choice.spec), "source": source, "index": int(index),
                "method": method, "layer": layer, "mode": mode, "class": int(chosen), "k": int(k),
                "pick": int(pick), "alpha": float(alpha)}
    save_section(model, sample, res, targets[pick], alpha, settings)

    st.divider()
    sections = {"methods": t("Methods side by side", "方法对比"),
                "gallery": t("Class gallery", "类别图库"),
                "metrics": t("Faithfulness", "可信度指标"),
                "bias": t("Bias experiment", "偏差实验")}
    section = st.radio(t("More", "更多"), list(sections), format_func=sections.get,
                       horizontal=True, key="gradcam_section")
    if section == "methods":
        methods_section(model, sample, res, targets[pick], alpha)
    elif section == "gallery":
        gallery_section(model, names, res.layer, method, alpha)
    elif section == "metrics":
        metrics_section(model, sample, res, pick)
    else:
        bias_section(alpha)


def save_section(model: Model, sample: InputChoice, res: camlib.CamResult, target: int,
                 alpha: float, settings: dict[str, Any]) -> None:
    """The shared "Save run" flow; the run (recorded on save) stores the target layer's
    activation and output gradient for the shown class and the model input, so the view
    re-renders without the model; ``meta["settings"]`` keeps the page's controls."""
    info = model.info
    meta = {"page": PAGE, "model": model.choice.name, "input_shape": list(sample.x.shape),
            "cam": {"method": res.method, "layer": res.layer, "target": int(target),
                    "alpha": float(alpha), "input": sample.description,
                    "weights": model.choice.weights, "model_spec": dict(model.choice.spec),
                    "mean": list(info.mean), "std": list(info.std),
                    "class_names": list(info.class_names), "label": sample.label},
            "settings": settings}
    run_flow.save_run(lambda: camui.record_run(model, sample, res.layers[0], target, meta),
                      PAGE)


def methods_section(model: Model, sample: InputChoice, res: camlib.CamResult, target: int,
                    alpha: float) -> None:
    chosen = st.multiselect(t("Methods", "方法"), list(camlib.METHODS), default=DEFAULT_METHODS,
                            format_func=lambda m: camlib.METHODS[m].title, key="gradcam_methods")
    raw = st.toggle(t("Raw maps instead of overlays", "显示原始热力图而非叠加图"),
                    key="gradcam_raw")
    if not chosen:
        st.info(t("Pick at least one method.", "请至少选择一个方法。"))
        return
    maps = {}
    with state.guard(t("Computing the methods", "计算各方法")):
        for m in chosen:
            maps[camlib.METHODS[m].title] = camui.method_map(model, sample.x, m, res.layer,
                                                             int(target))
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


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it runs nothing
    main()
