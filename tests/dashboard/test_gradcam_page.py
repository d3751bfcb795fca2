"""AppTest of the Grad-CAM page: the seed's panels carry the CAM hooklab computes, controls change
what is drawn, a saved run re-renders the same map from the store, bad input is one st.error."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from hooklab.cam import engine as camlib
from hooklab.charts import cam as C
from hooklab.store.runs import TraceStore
from hooklab.studies.train import seed_recipe_model
from tests.dashboard.conftest import run_page

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "gradcam.py")
TIMEOUT = 120


@pytest.fixture(scope="session")
def cache_dir() -> str:
    # The default model is the SimpleCNN trained on shapes: train it once per machine in the
    # project's (git-ignored) cache, or use the shared cache the caller points to.
    path = os.environ.get("HOOKLAB_CACHE") or str(Path(PAGE).parents[2] / ".hooklab-cache")
    old = os.environ.get("HOOKLAB_CACHE")
    os.environ["HOOKLAB_CACHE"] = path
    try:  # train once here, outside any AppTest timeout
        from hooklab.studies.train import trained_model

        trained_model()
    finally:
        if old is None:
            del os.environ["HOOKLAB_CACHE"]
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    monkeypatch.setenv("HOOKLAB_CACHE", cache_dir)
    from dashboard import state

    state.store.clear()
    yield TraceStore(tmp_path / "runs")
    state.store.clear()


def _app(**query) -> AppTest:
    return run_page(PAGE, TIMEOUT, **query)


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not at.error, [e.value for e in at.error]


def _array(v) -> np.ndarray:
    """Plotly JSON data: a list or a typed array ``{"dtype", "bdata", "shape"}``."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        if "shape" in v:
            a = a.reshape([int(s) for s in str(v["shape"]).split(",")])
        return a
    return np.asarray(v)


def _figure(at: AppTest, key: str) -> dict:
    for el in at.get("plotly_chart"):
        if el.key == key or key in (getattr(el.proto, "id", "") or ""):
            return json.loads(el.proto.spec)
    raise AssertionError(f"no chart {key!r}")


def _panels(at: AppTest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fig = _figure(at, "gradcam_panels")
    assert [d["type"] for d in fig["data"]] == ["image", "heatmap", "image"]
    return tuple(_array(d["z"]) for d in fig["data"])  # type: ignore[return-value]


def test_default_view_draws_the_seed_panels(store):
    at = _app()
    _ok(at)
    image, heat, over = _panels(at)
    assert image.shape == (32, 32, 3) and heat.shape == (32, 32) and over.shape == (32, 32, 3)
    assert heat.dtype == np.float32 and 0.0 <= heat.min() and heat.max() <= 1.0
    # the overlay is the seed's 0.4·jet + 0.6·image of the drawn image and map
    expect = C.to_uint8(C.overlay(image.astype(np.float32) / 255, heat, 0.4))
    assert np.abs(over.astype(int) - expect.astype(int)).max() <= 1

    # the top-k chart: the softmax of the model's output for the drawn input, best first
    bar = _figure(at, "gradcam_topk")["data"][0]
    probs = _array(bar["x"]).astype(np.float64)
    logits = _default_logits(at)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-softmax, kind="stable")[:5]
    from hooklab.data import datasets as datalib

    assert list(bar["y"]) == [datalib.SHAPE_CLASSES[i] for i in order]
    np.testing.assert_allclose(probs, softmax[order], rtol=1e-5, atol=1e-7)
    assert np.all((probs > 0) & (probs <= 1)) and np.all(np.diff(probs) <= 0)


def _default_model(at: AppTest):
    from dashboard.components import pickers as widgets

    weights = at.radio(key="gradcam_weights").value
    return widgets.load_model({"name": "simple_cnn", "weights": weights}).model


def _default_logits(at: AppTest) -> np.ndarray:
    """The model's output on the page's default input (shapes test image 102), in float64."""
    from hooklab.data import datasets as datalib

    img, _, _ = datalib.shapes_sample(102)
    with torch.no_grad():
        return _default_model(at)(img[None])[0].double().numpy()


def test_panels_show_the_cam_hooklab_computes(store):
    at = _app()
    _ok(at)
    _, heat, _ = _panels(at)
    from dashboard.components import pickers as widgets
    from hooklab.data import datasets as datalib

    weights = at.radio(key="gradcam_weights").value
    choice = widgets.load_model({"name": "simple_cnn", "weights": weights})
    img, _, _ = datalib.shapes_sample(102)
    ref = camlib.compute(choice.model, img[None], method="gradcam")
    np.testing.assert_allclose(heat, ref.maps[0].numpy(), atol=1e-5)


def test_opacity_method_and_topk_controls(store):
    at = _app()
    _, heat, _ = _panels(at)
    at.slider(key="gradcam_alpha").set_value(1.0).run()
    _ok(at)
    _, _, over = _panels(at)
    np.testing.assert_array_equal(over, C.to_uint8(C.jet(heat)))  # alpha 1: pure jet

    at.selectbox(key="gradcam_method").set_value("eigencam")
    at.radio(key="gradcam_mode").set_value("topk")
    at.number_input(key="gradcam_k").set_value(3)
    at.button(key="gradcam_run").click().run()  # the form's "Run Grad-CAM"
    _ok(at)
    pick = at.radio(key="gradcam_pick")
    assert len(pick.options) == 3
    assert any("EigenCAM" in m.value for m in at.markdown)


SEVEN = ["Grad-CAM", "Grad-CAM++", "XGrad-CAM", "HiResCAM", "LayerCAM", "Score-CAM", "EigenCAM"]


def test_methods_side_by_side_and_metrics(store):
    at = _app()
    fig = _figure(at, "gradcam_methods_fig")  # the default "More" section: the classic seven
    assert [a["text"] for a in fig["layout"]["annotations"]] == SEVEN
    assert [d["type"] for d in fig["data"]] == ["image"] * 7
    assert any(f"7 of the {len(camlib.METHODS)} methods" in c.value for c in at.caption)
    at.toggle(key="gradcam_raw").set_value(True).run()  # raw maps: each one hooklab's map
    _ok(at)
    fig = _figure(at, "gradcam_methods_fig")
    from hooklab.data import datasets as datalib

    img, _, _ = datalib.shapes_sample(102)
    model = _default_model(at)
    target = int(np.argmax(_default_logits(at)))
    from dashboard.components.cam_sections import DEFAULT_METHODS

    for name, trace in zip(DEFAULT_METHODS, fig["data"], strict=True):
        ref = camlib.compute(model, img[None], method=name, layer="conv3", target=target)
        np.testing.assert_allclose(_array(trace["z"]), ref.maps[0].numpy(), atol=1e-5,
                                   err_msg=name)
    at.radio(key="gradcam_section").set_value("metrics").run()
    _ok(at)
    curves = _figure(at, "gradcam_curves")
    deletion = _array(curves["data"][0]["y"])
    assert deletion.shape == (33,) and np.all((deletion >= 0) & (deletion <= 1))
    table = at.dataframe[0].value
    assert "AD % ↓" in table.columns and any("pointing" in c for c in table.columns)
    at.radio(key="gradcam_section").set_value("gallery").run()
    _ok(at)


def test_save_run_and_reopen_from_share_link(store):
    at = _app()
    _, heat, _ = _panels(at)
    at.text_input(key="gradcam_notes").input("look at the circle")
    at.button(key="gradcam_save").click().run()
    _ok(at)
    rid = at.session_state["gradcam_saved"]
    assert any(rid in s.value for s in at.success)
    assert any(f"/gradcam?run={rid}" in c.value for c in at.code)
    m = store.manifest(rid)
    assert m["meta"]["page"] == "gradcam" and m["notes"] == "look at the circle"
    assert m["meta"]["cam"]["layer"] == "conv3"
    assert m["meta"]["settings"]["index"] == 102 and m["meta"]["settings"]["method"] == "gradcam"

    other = _app(run=rid)  # a colleague opening the link: a fresh session
    _ok(other)
    assert any(f"Saved run {rid}" in i.value for i in other.info)
    _, heat2, _ = (_array(d["z"]) for d in _figure(other, "gradcam_run_panels")["data"])
    np.testing.assert_allclose(heat2, heat, atol=1e-5)  # same map, re-rendered from the store


def test_unknown_run_is_one_error(store):
    at = _app(run="20990101-000000-deadbeef")
    assert len(at.error) == 1 and not at.exception


def test_bad_upload_is_one_error_and_page_keeps_working(store):
    at = _app()
    at.radio(key="gradcam_source").set_value("upload")
    at.file_uploader(key="gradcam_image").upload("notes.png", b"this is not an image", "image/png")
    at.button(key="gradcam_run").click().run()
    assert len(at.error) == 1 and not at.exception
    assert "image" in at.error[0].value.lower()
    at.radio(key="gradcam_source").set_value("shapes")
    at.button(key="gradcam_run").click().run()
    _ok(at)
    _panels(at)


def test_upload_handler_with_bad_bytes_shows_one_error(store):
    def script():
        from dashboard.components.cam import handle_upload
        from hooklab.models.zoo import model_info

        handle_upload(b"\x89PNG\r\n\x1a\nbroken", "x.png", model_info("simple_cnn"))
        import streamlit as st

        st.write("not reached")

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert len(at.error) == 1 and not at.exception
    assert not any("not reached" in m.value for m in at.markdown)


def test_good_upload_is_used(store):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(buf, format="PNG")
    at = _app()
    at.radio(key="gradcam_source").set_value("upload")
    at.file_uploader(key="gradcam_image").upload("grey.png", buf.getvalue(), "image/png")
    at.button(key="gradcam_run").click().run()
    _ok(at)
    image, _, _ = _panels(at)
    assert image.shape == (32, 32, 3) and np.all(np.abs(image.astype(int) - 200) <= 1)


def test_mismatched_weights_are_one_error(store):
    wrong = save({"conv1.weight": torch.zeros(8, 3, 3, 3)})  # wrong shape, keys missing
    at = _app()
    at.radio(key="gradcam_weights").set_value("upload").run()
    at.file_uploader(key="gradcam_wfile").upload("w.safetensors", wrong).run()
    assert len(at.error) == 1 and not at.exception
    assert "conv1.weight" in at.error[0].value or "missing" in at.error[0].value.lower()


def test_bias_experiment_wiring(store, monkeypatch):
    """The page trains both arms with progress, shows where their CAMs point and both CAMs side
    by side. (Training is replaced by seeded random models here; hooklab.studies.bias has its own tests.)"""
    from hooklab.models.zoo import get_model
    from hooklab.studies import bias

    calls = []

    def fake_train_arm(arm, cue_prob=0.95, *, seed=0, progress=None, **config):
        calls.append((arm, round(cue_prob, 3)))
        for step in (1, 2):
            progress(step, 2, {"loss": 1.0 / step})
        return get_model("simple_cnn", seed=len(calls))

    monkeypatch.setattr(bias, "train_arm", fake_train_arm)
    at = _app()
    at.radio(key="gradcam_section").set_value("bias").run()
    _ok(at)
    at.button(key="gradcam_bias_run").click().run()
    _ok(at)
    assert calls == [("biased", 0.95), ("rebalanced", round(1 / 6, 3))]
    table = at.dataframe[0].value
    assert len(table) == 2
    grid = _figure(at, "gradcam_bias_grid")
    assert len(grid["data"]) == 12  # 6 conflicting test images x 2 models
    bars = _figure(at, "gradcam_bias_bars")
    for trace in bars["data"]:
        assert np.all((_array(trace["y"]) >= 0) & (_array(trace["y"]) <= 1))


def test_english_titles_name_the_classes(store):
    at = _app()
    _ok(at)
    from hooklab.data import datasets as datalib

    pred = datalib.SHAPE_CLASSES[int(np.argmax(_default_logits(at)))]
    assert [a["text"] for a in _figure(at, "gradcam_panels")["layout"]["annotations"]][:3] == \
        ["Original: cross", f"Grad-CAM heatmap: {pred}", "Overlay"]


def test_chinese_labels_and_class_names(store):
    from hooklab.data import datasets as datalib
    from hooklab.models.inputs import SHAPES_ZH

    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["hooklab_lang"] = "zh"
    at.run()
    _ok(at)
    text = "\n".join(m.value for m in at.markdown)
    assert "真实类别" in text and "十字" in text  # shapes sample 102 is a cross
    fig = _figure(at, "gradcam_panels")
    pred = SHAPES_ZH[datalib.SHAPE_CLASSES[int(np.argmax(_default_logits(at)))]]
    # the seed's titles: 原始图像: <true class>, Grad-CAM热力图: <class of the map>, 叠加热力图
    assert [a["text"] for a in fig["layout"]["annotations"]][:3] == \
        ["原始图像: 十字", f"Grad-CAM热力图: {pred}", "叠加热力图"]
    assert _figure(at, "gradcam_topk")["data"][0]["y"][0] == pred


def test_cifar10_sample_from_a_local_copy(store, tmp_path, monkeypatch):
    """With a (tiny, fake) local CIFAR-10 copy the page offers CIFAR-10 samples."""
    import pickle

    import streamlit as st

    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 3, 32, 32), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": pixels.reshape(12, -1), b"labels": [i % 10 for i in range(12)]}, f)
    monkeypatch.setenv("HOOKLAB_CIFAR10", str(tmp_path / "cifar"))
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = _app()
        at.radio(key="gradcam_source").set_value("cifar10")
        at.number_input(key="gradcam_index").set_value(5)
        at.button(key="gradcam_run").click().run()
        _ok(at)
        image, _, _ = _panels(at)
        np.testing.assert_array_equal(image, pixels[5].transpose(1, 2, 0))  # the stored pixels
        assert any("CIFAR-10 test #5" in m.value for m in at.markdown)
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


# -- the seed's own model: SimpleCNN trained by the seed's recipe on a local CIFAR-10 -------------

def _write_fake_cifar(root: Path, n_train: int = 20, n_test: int = 110,
                      train: bool = True) -> np.ndarray:
    """A tiny CIFAR-10 copy in torchvision's layout; returns the test pixels (N, 3, 32, 32)."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else []
    test = None
    for name in [*names, "test_batch"]:
        n = n_test if name == "test_batch" else n_train
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [int(v) for v in rng.integers(0, 10, n)]}, f)
        if name == "test_batch":
            test = data.reshape(n, 3, 32, 32)
    from hooklab.data.datasets import CIFAR10_CLASSES

    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f)
    return test


@pytest.fixture
def fresh_caches():
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def seed_cifar(store, tmp_path, monkeypatch, fresh_caches):
    """$HOOKLAB_CIFAR10 at a fake copy with 110 test images, $HOOKLAB_CACHE in a tmp folder."""
    pixels = _write_fake_cifar(tmp_path / "cifar")
    monkeypatch.setenv("HOOKLAB_CIFAR10", str(tmp_path / "cifar"))
    monkeypatch.setenv("HOOKLAB_CACHE", str(tmp_path / "cache"))
    return pixels


def _pick_seed_recipe(lang: str = "en") -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["hooklab_lang"] = lang
    at.run()
    _ok(at)
    shown = {"en": "seed recipe (CIFAR-10)", "zh": "课程配方（CIFAR-10）"}[lang]
    assert shown in at.radio(key="gradcam_weights").options
    at.radio(key="gradcam_weights").set_value("cifar10-seed").run()
    return at


def test_seed_recipe_model_on_cifar10_test_image_102(seed_cifar, tmp_path):
    from hooklab.data import datasets as datalib

    at = _pick_seed_recipe()
    _ok(at)
    # trained inside st.status with a progress bar, then marked complete
    assert [s.state for s in at.status] == ["complete"]
    assert at.status[0].label.startswith("Seed-recipe SimpleCNN ready")
    assert list((tmp_path / "cache").glob("simple_cnn-cifar10-*.safetensors"))  # cached there
    # the seed's input: CIFAR-10 test image 102, as stored
    assert at.radio(key="gradcam_source").value == "cifar10"
    assert at.number_input(key="gradcam_index").value == 102
    image, heat, _ = _panels(at)
    np.testing.assert_array_equal(image, seed_cifar[102].transpose(1, 2, 0))
    label = int(datalib.cifar10(train=False).targets[102])
    assert any("CIFAR-10 test #102" in m.value for m in at.markdown)
    # the map is the seed-recipe model's Grad-CAM of that image (model read back from the cache)
    model = seed_recipe_model()
    x = datalib.normalise(torch.from_numpy(seed_cifar[102]).float() / 255, (0.5,) * 3,
                          (0.5,) * 3)[None]
    ref = camlib.compute(model, x, method="gradcam", layer="conv3")
    np.testing.assert_allclose(heat, ref.maps[0].numpy(), atol=1e-5)
    pred = datalib.CIFAR10_CLASSES[int(ref.targets[0])]
    titles = [a["text"] for a in _figure(at, "gradcam_panels")["layout"]["annotations"]][:3]
    assert titles == [f"Original: {datalib.CIFAR10_CLASSES[label]}",
                      f"Grad-CAM heatmap: {pred}", "Overlay"]
    at.run()  # a rerun uses the model in memory: no training box any more
    _ok(at)
    assert not at.status


def test_seed_recipe_model_in_chinese(seed_cifar):
    from hooklab.data import datasets as datalib

    at = _pick_seed_recipe("zh")
    _ok(at)
    label = int(datalib.cifar10(train=False).targets[102])
    titles = [a["text"] for a in _figure(at, "gradcam_panels")["layout"]["annotations"]][:3]
    assert titles[0] == f"原始图像: {datalib.CIFAR10_CLASSES_ZH[label]}"
    assert titles[1].split(": ")[1] in datalib.CIFAR10_CLASSES_ZH and titles[2] == "叠加热力图"
    assert at.status[0].label.startswith("课程配方 SimpleCNN 已就绪")


def test_seed_recipe_without_training_split_is_one_error(store, tmp_path, monkeypatch,
                                                         fresh_caches):
    _write_fake_cifar(tmp_path / "cifar", train=False)  # test split only: nothing to train on
    monkeypatch.setenv("HOOKLAB_CIFAR10", str(tmp_path / "cifar"))
    monkeypatch.setenv("HOOKLAB_CACHE", str(tmp_path / "cache"))
    at = _pick_seed_recipe()
    assert not at.exception
    assert len(at.error) == 1 and "CIFAR-10" in at.error[0].value, [e.value for e in at.error]
    assert not at.get("plotly_chart")  # the page stopped cleanly after the message


def test_seed_recipe_offered_only_with_a_cifar10_copy(store, tmp_path, monkeypatch,
                                                      fresh_caches):
    from hooklab.data import datasets as datalib

    monkeypatch.setenv("HOOKLAB_CIFAR10", str(tmp_path / "nowhere"))
    try:
        datalib.cifar10()
        available = True  # a copy in ./data or ~/.cache/hooklab/data on this machine
    except datalib.DataError:
        available = False
    at = _app()
    _ok(at)
    assert ("seed recipe (CIFAR-10)" in at.radio(key="gradcam_weights").options) == available
    assert "trained on shapes" in at.radio(key="gradcam_weights").options
