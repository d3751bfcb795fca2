"""AppTest of every page with the ViT models: the SimpleViT on its shipped weights (Inspector,
Compare edits halving the gradient at an encoder block, Grad-CAM, save and reopen on Runs), and
torchvision's vit_b_16 (random weights, 224 px) on the Grad-CAM page."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from hooklab.store.runs import TraceStore
from tests.dashboard.conftest import figures, plotly_array

VIEWS = Path(__file__).resolve().parents[2] / "dashboard" / "views"
TIMEOUT = 240
BLOCK = "encoder.layers.encoder_layer_1"


def _page(name: str) -> AppTest:
    at = AppTest.from_file(str(VIEWS / name), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def _pick_vit(at: AppTest, page: str, name: str = "simple_vit") -> AppTest:
    at.selectbox(key=f"{page}_model").set_value(name).run()
    _ok(at)
    return at


def test_picker_offers_the_vits_with_shipped_weights_by_default(store_dir):
    at = _pick_vit(_page("inspector.py"), "inspector")
    options = at.selectbox(key="inspector_model").options
    assert {"simple_vit", "vit_b_16", "swin_t"} <= set(options)
    weights = at.radio(key="inspector_weights")
    assert "trained on shapes" in weights.options and weights.index == 0  # "default": shapes


def test_inspector_records_the_simple_vit(store_dir):
    at = _pick_vit(_page("inspector.py"), "inspector")
    at.text_input(key="inspector_layers_free").set_value(f"conv_proj, {BLOCK}").run()
    at.button(key="inspector_run").click().run()
    _ok(at)
    table = at.dataframe[0].value
    assert {"conv_proj", BLOCK} == set(table["layer"])
    shapes = {tuple(re.findall(r"\d+", str(s))) for s in table.loc[table["layer"] == BLOCK,
                                                                      "shape"]}
    assert ("1", "65", "64") in shapes  # the block's (B, T, D) output and its gradient
    # save the run, then the Runs page lists it with the ViT's name
    at.button(key="inspector_save").click().run()
    _ok(at)
    run_id = at.success[0].value.split()[-1]
    trace = TraceStore(store_dir).load(run_id)
    assert trace.meta["settings"]["model"] == {"name": "simple_vit", "weights": "shapes"}
    runs = AppTest.from_file(str(VIEWS / "runs.py"), default_timeout=TIMEOUT)
    runs.run()
    _ok(runs)
    assert any(run_id in str(df.value.to_dict()) for df in runs.dataframe)
    # reopen it on the Inspector: the same events, the same model picked
    back = AppTest.from_file(str(VIEWS / "inspector.py"), default_timeout=TIMEOUT)
    back.query_params["run"] = run_id
    back.run()
    _ok(back)
    assert len(back.dataframe[0].value) == len(table)
    assert back.selectbox(key="inspector_model").value == "simple_vit"


def _compare_ratios(at: AppTest) -> dict[str, float]:
    """Run Compare edits and read its gradient-norm ratio bars (B / A per layer)."""
    at.button(key="compare_run").click().run()
    _ok(at)
    ratio = next(c for c in figures(at) if c["layout"]["title"]["text"].startswith(
        "Gradient-norm ratio"))
    bar = ratio["data"][0]
    return dict(zip(bar["x"], plotly_array(bar["y"]).tolist(), strict=True))


def test_compare_halves_the_gradient_at_an_encoder_block(store_dir):
    at = _pick_vit(_page("compare.py"), "compare")
    assert at.text_area(key="compare_b_edits").value == f"{BLOCK}=scale(0.5)"
    r = _compare_ratios(at)
    assert r["input"] == pytest.approx(0.5, rel=1e-4)  # upstream of the block: halved
    assert r["conv_proj (param)"] == pytest.approx(0.5, rel=1e-4)
    assert r["heads.head (param)"] == pytest.approx(1.0, rel=1e-4)  # downstream: unchanged


def _heatmap(at: AppTest) -> np.ndarray:
    """The Grad-CAM panels' heatmap (original, heatmap, overlay) as an array."""
    el = next(el for el in at.get("plotly_chart") if el.key == "gradcam_panels"
              or "gradcam_panels" in (getattr(el.proto, "id", "") or ""))
    fig = json.loads(el.proto.spec)
    assert [d["type"] for d in fig["data"]] == ["image", "heatmap", "image"]
    z = fig["data"][1]["z"]
    if isinstance(z, dict) and "bdata" in z:
        a = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
        return a.reshape([int(s) for s in str(z["shape"]).split(",")]) if "shape" in z else a
    return np.asarray(z, dtype=float)


def test_gradcam_page_shows_a_map_for_the_simple_vit(store_dir):
    at = _pick_vit(_page("gradcam.py"), "gradcam")
    heat = _heatmap(at)
    assert heat.shape == (32, 32) and np.isfinite(heat).all() and float(np.ptp(heat)) > 0


def test_gradcam_page_offers_and_runs_every_blocks_token_map(store_dir):
    """The layer picker lists each encoder block's ln_1 (a token grid, not only ``conv_proj``);
    choosing one and a method recomputes the map there."""
    at = _pick_vit(_page("gradcam.py"), "gradcam")
    layers = at.selectbox(key="gradcam_layer").options
    assert {f"encoder.layers.encoder_layer_{i}.ln_1" for i in range(4)} <= set(layers)
    assert not any(n.endswith("self_attention") for n in layers)
    auto = _heatmap(at)
    at.selectbox(key="gradcam_method").set_value("eigengradcam")
    at.selectbox(key="gradcam_layer").set_value("encoder.layers.encoder_layer_1.ln_1")
    at.button(key="gradcam_run").click().run()  # the form's "Run Grad-CAM"
    _ok(at)
    chosen = _heatmap(at)
    assert chosen.shape == (32, 32) and np.isfinite(chosen).all() and float(np.ptp(chosen)) > 0
    assert not np.allclose(chosen, auto)
    assert any("encoder_layer_1.ln_1" in m.value for m in at.markdown)


@pytest.mark.slow
def test_gradcam_page_runs_vit_b_16_after_the_default_model(store_dir):
    """From the 32 px default (Score-CAM among the side-by-side methods) to vit_b_16: the map is
    224 x 224 and the methods follow the large-input default (no Score-CAM: 768 forwards)."""
    at = _page("gradcam.py")
    assert "scorecam" in at.multiselect(key="gradcam_methods").value
    _pick_vit(at, "gradcam", "vit_b_16")
    heat = _heatmap(at)
    assert heat.shape == (224, 224) and np.isfinite(heat).all() and float(np.ptp(heat)) > 0
    methods = at.multiselect(key="gradcam_methods").value
    assert "scorecam" not in methods and "gradcam" in methods
    assert any("Score-CAM is left out" in c.value for c in at.caption)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_inspector_and_compare_run_torchvision_transformers(store_dir, name):
    """torchvision's ViT-B/16 and Swin-T (random weights, 224 px) on the Inspector (recorded,
    saved, opened on Runs) and on Compare edits (the example edit halves the gradient upstream
    of it)."""
    at = _pick_vit(_page("inspector.py"), "inspector", name)
    at.button(key="inspector_run").click().run()
    _ok(at)
    n_events = len(at.dataframe[0].value)
    assert n_events > 0
    at.button(key="inspector_save").click().run()  # saved, then listed and reopened on Runs
    _ok(at)
    run_id = at.success[0].value.split()[-1]
    assert TraceStore(store_dir).load(run_id).meta["settings"]["model"]["name"] == name
    runs = AppTest.from_file(str(VIEWS / "runs.py"), default_timeout=TIMEOUT)
    runs.query_params["run"] = run_id
    runs.run()
    _ok(runs)
    assert any(run_id in str(df.value.to_dict()) for df in runs.dataframe)
    cmp_ = _pick_vit(_page("compare.py"), "compare", name)
    edit = cmp_.text_area(key="compare_b_edits").value
    assert edit.endswith("=scale(0.5)")
    r = _compare_ratios(cmp_)
    assert r["input"] == pytest.approx(0.5, rel=1e-3)  # upstream of the halved block
