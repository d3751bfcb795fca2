"""Grad-CAM: where a classifier looks.

The seed's three panels (original, jet heatmap, overlay ``0.4·jet + 0.6·image`` with an opacity
slider), several CAM methods side by side, target layer (automatic by default) and class
(predicted, chosen, top-k), a class-wise gallery, faithfulness metrics, the sanity strip (the maps as the layers are randomised, and
the data-randomisation test), the layer sweep (which
layer is most faithful; "use this layer"), CAMs over training (an animation with a step slider),
the bias experiment, downloads, and "Save run". ``/gradcam?run=<id>`` shows a saved run,
re-rendered from its stored activations and gradients (no model needed except for Score-CAM).

Layout only: CAMs come from :mod:`hooklab.cam.engine`, inputs from :mod:`hooklab.models.inputs`,
stored runs from :mod:`hooklab.cam.runs`, figures from :mod:`hooklab.charts.cam`; the page's
cached controls are :mod:`dashboard.components.cam`, the further sections
:mod:`~.cam_sections`, :mod:`~.cam_sanity` and :mod:`~.cam_trust`, open/save/share
:mod:`~.run_flow`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import streamlit as st

from dashboard import state
from dashboard.components import cam as camui
from dashboard.components import cam_sanity, pickers, run_flow
from dashboard.components import cam_trust as trust
from dashboard.components.cam import Model, compute, wrap
from dashboard.components.cam_sections import (
    bias_section,
    gallery_section,
    methods_section,
    metrics_section,
)
from dashboard.components.pickers import InputChoice
from dashboard.components.text import plain
from dashboard.i18n import t
from hooklab.cam import engine as camlib
from hooklab.cam import runs as cam_runs
from hooklab.charts import cam as charts
from hooklab.data import datasets as datalib

log = logging.getLogger(__name__)

PAGE = "gradcam"
SEED_TEST_INDEX = 102  # the seed's CIFAR-10 test image


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
        cam_sanity.doctor_note(model, sample, res)
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
    more_sections(model, names, sample, res, targets[pick], pick, method, alpha, spatial)


def more_sections(model: Model, names: list[str], sample: InputChoice, res: camlib.CamResult,
                  target: int, pick: int, method: str, alpha: float, spatial: list[str]) -> None:
    """The "More" radio and the chosen section below the panels."""
    sections = {"methods": t("Methods side by side", "方法对比"),
                "gallery": t("Class gallery", "类别图库"),
                "metrics": t("Faithfulness", "可信度指标"),
                "sanity": t("Sanity checks", "合理性检查"),
                "sweep": t("Layer sweep", "层扫描"),
                "training": t("CAMs over training", "训练过程中的 CAM"),
                "bias": t("Bias experiment", "偏差实验")}
    section = st.radio(t("More", "更多"), list(sections), format_func=sections.get,
                       horizontal=True, key="gradcam_section")
    if section == "methods":
        methods_section(model, sample, res, target, alpha)
    elif section == "gallery":
        gallery_section(model, names, res.layer, method, alpha)
    elif section == "metrics":
        metrics_section(model, sample, res, pick)
    elif section == "sanity":
        cam_sanity.sanity_section(model, sample, res, target)
    elif section == "sweep":
        trust.sweep_section(model, sample, spatial)
    elif section == "training":
        trust.training_section(alpha)
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


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it runs nothing
    main()
