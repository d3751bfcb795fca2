"""AppTest: a model registered through ``$HOOKLAB_MODELS`` (the example lab's ``lab_resnet``)
is in every model picker with its description, and Inspector, Compare edits, Grad-CAM and Runs
work on it; a module that fails to import is one clear st.error and the zoo still works."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from hooklab.models import registry, zoo
from hooklab.models.weights import save_safetensors
from hooklab.store.runs import TraceStore
from tests.dashboard.conftest import figures, plotly_array
from tests.models.registry_helpers import LAB, LAB_MODULE, forget_lab, saved_registry

VIEWS = Path(__file__).resolve().parents[2] / "dashboard" / "views"
TIMEOUT = 180
LABEL = "lab_resnet — example lab: residual CNN, 3x32x32, trained on shapes"


@pytest.fixture
def lab(store_dir, monkeypatch, tmp_path):
    """``HOOKLAB_MODELS=hooklab_example_lab.models`` with the package on the path (not installed),
    plus a throw-away module registering a non-image model; the registry restored afterwards."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "vector_lab_mod.py").write_text(textwrap.dedent("""
        from torch import nn
        import hooklab

        @hooklab.models.register("vector_mlp", input_shape=(16,), class_names=("no", "yes"),
                                 description="a vector model")
        def vector_mlp():
            return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        """))
    monkeypatch.syspath_prepend(str(LAB))
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.setenv(registry.ENV_VAR, f"{LAB_MODULE},vector_lab_mod")
    forget_lab()
    with saved_registry():
        yield store_dir
    forget_lab()
    sys.modules.pop("vector_lab_mod", None)


def _page(name: str, **query) -> AppTest:
    at = AppTest.from_file(str(VIEWS / f"{name}.py"), default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _pick_lab(at: AppTest, key: str) -> None:
    box = at.selectbox(key=key)
    assert LABEL in box.options  # the registered model, with its description
    assert "simple_cnn" in box.options  # and the zoo
    box.set_value("lab_resnet").run()
    _ok(at)


def test_inspector_records_the_registered_model_and_saves_a_run_for_runs(lab):
    at = _page("inspector")
    _ok(at)
    _pick_lab(at, "inspector_model")
    assert at.radio(key="inspector_weights").value == "auto"  # its own weights file
    assert any("Default: its registered weights file lab_resnet.safetensors" in c.value
               for c in at.caption)
    assert any("label: cross" in c.value for c in at.caption)  # shapes sample 102 fits 3x32x32
    at.button(key="inspector_run").click().run()
    _ok(at)
    table = at.dataframe[0].value
    assert {"stem", "block1.conv1", "block1.conv2", "down", "block2.conv2", "fc"} <= set(
        table["layer"])
    assert [m.value for m in at.metric if m.label == "Prediction"] == ["cross"]  # trained file
    at.text_input(key="inspector_notes").input("lab model").run()
    at.button(key="inspector_save").click().run()
    _ok(at)
    store = TraceStore(lab)
    [rid] = store.list()["run_id"]
    meta = store.manifest(rid)["meta"]
    assert meta["model"] == "lab_resnet"
    assert meta["settings"]["model"] == {"name": "lab_resnet", "weights": "registered"}

    # Runs: the run is listed with its model and opens
    runs = _page("runs")
    _ok(runs)
    df = runs.dataframe[0].value
    assert list(df["model"]) == ["lab_resnet"]
    runs = _page("runs", run=rid)
    _ok(runs)
    assert any("lab_resnet" in m.value for m in runs.markdown)
    # reopened on the Inspector: the registered model is picked again
    again = _page("inspector", run=rid)
    _ok(again)
    assert again.selectbox(key="inspector_model").value == "lab_resnet"


def test_compare_edits_on_the_registered_model(lab):
    at = _page("compare")
    _pick_lab(at, "compare_model")
    # the example edit names one of this model's layers (it has no conv2)
    assert at.text_area(key="compare_b_edits").value == "block1.conv2=scale(0.5)"
    at.button(key="compare_run").click().run()
    _ok(at)
    chart = next(c for c in figures(at)
                 if c["layout"]["title"]["text"].startswith("Gradient-norm ratio"))
    bar = chart["data"][0]
    ratios = dict(zip(bar["x"], plotly_array(bar["y"]).tolist(), strict=True))
    # upstream inside the residual branch: exactly halved; downstream: unchanged
    assert ratios["block1.conv1 (param)"] == pytest.approx(0.5, rel=1e-5)
    assert ratios["block1.conv2 (param)"] == pytest.approx(0.5, rel=1e-5)
    for layer in ("down", "block2.conv1", "fc"):
        assert ratios[f"{layer} (param)"] == pytest.approx(1.0, rel=1e-5)
    # the stem also gets the skip connection's gradient: more than half survives
    assert 0.5 < ratios["stem (param)"] < 1.0 + 1e-6
    titles = [c["layout"]["title"]["text"] for c in figures(at)]
    assert any(x.startswith("CAM difference") for x in titles)


def test_gradcam_on_the_registered_model(lab):
    at = _page("gradcam")
    _pick_lab(at, "gradcam_model")
    layer = at.selectbox(key="gradcam_layer")
    assert layer.options[0] == "automatic (block2)"  # the registered cam_layer
    assert "block1" in layer.options
    assert any("**Layer:** block2" in m.value for m in at.markdown)
    names = at.selectbox(key="gradcam_class").options
    assert names == ["circle", "square", "triangle", "cross", "star", "diamond"]
    panels = figures(at)[0]
    assert len(panels["data"]) >= 3  # original, heatmap, overlay
    at.radio(key="gradcam_section").set_value("gallery").run()
    _ok(at)
    assert any("One test image per class" in c.value for c in at.caption)  # shapes classes
    # random pixels resized to the registered shape and normalised with its mean/std
    at.radio(key="gradcam_source").set_value("random")
    at.button(key="gradcam_run").click().run()
    _ok(at)
    assert any("random (seed" in m.value for m in at.markdown)


def test_uploaded_weights_and_random_weights_for_the_registered_model(lab, tmp_path):
    at = _page("inspector")
    _pick_lab(at, "inspector_model")
    at.radio(key="inspector_weights").set_value("random").run()
    _ok(at)
    torch.manual_seed(5)
    from hooklab_example_lab.models import LabResNet

    blob = save_safetensors(LabResNet(), tmp_path / "mine.safetensors").read_bytes()
    at.radio(key="inspector_weights").set_value("upload").run()
    at.file_uploader(key="inspector_wfile").upload("mine.safetensors", blob,
                                                   "application/octet-stream").run()
    _ok(at)
    at.button(key="inspector_run").click().run()
    _ok(at)
    # a weights file of another model is one clear error
    bad = save_safetensors(zoo.SimpleCNN(), tmp_path / "cnn.safetensors").read_bytes()
    at.file_uploader(key="inspector_wfile").upload("cnn.safetensors", bad,
                                                   "application/octet-stream").run()
    assert not at.exception
    assert len(at.error) == 1 and "do not fit LabResNet" in at.error[0].value


def test_a_non_image_registered_model_gets_a_random_tensor(lab):
    at = _page("inspector")
    at.selectbox(key="inspector_model").set_value("vector_mlp").run()
    _ok(at)
    assert at.radio(key="inspector_source").options == ["random normal tensor (16,)"]
    at.button(key="inspector_run").click().run()
    _ok(at)
    assert set(at.dataframe[0].value["layer"]) >= {"0", "1", "2"}
    # the Grad-CAM page says why it cannot (one message, no traceback)
    cam = AppTest.from_file(str(VIEWS / "gradcam.py"), default_timeout=TIMEOUT).run()
    cam.selectbox(key="gradcam_model").set_value("vector_mlp").run()
    assert not cam.exception
    assert len(cam.error) == 1 and "spatial" in cam.error[0].value


def test_a_bad_module_is_one_clear_error_and_the_zoo_still_works(store_dir, monkeypatch):
    monkeypatch.setenv(registry.ENV_VAR, "no_such_lab_xyz.models")
    with saved_registry():
        at = _page("inspector")
        errors = [e.value for e in at.error]
        assert len(errors) == 1, errors
        assert "could not load model module 'no_such_lab_xyz.models'" in errors[0]
        assert "built-in models still work" in errors[0]
        assert at.selectbox(key="inspector_model").value == "simple_cnn"
        at.button(key="inspector_run").click().run()
        assert not at.exception
        assert len(at.error) == 1  # still just the one message; the run worked
        assert len(at.dataframe[0].value) > 20
