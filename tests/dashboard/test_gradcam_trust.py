"""AppTest of the Grad-CAM page's trust views: the layer sweep draws the library's scores and
"use this layer" sets the target layer; CAMs over training animate the checkpoints' maps with a
step slider (shapes training and the bias experiment); an error is one st.error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hooklab.cam import sweep as sweeplib
from hooklab.cam.engine import CamError
from hooklab.charts import cam as C
from hooklab.data import datasets as datalib
from hooklab.studies import cam_training as CT
from hooklab.studies.train import trained_model
from tests.dashboard.test_gradcam_page import _app, _array, _figure, _ok, cache_dir, store

__all__ = ["cache_dir", "store"]  # fixtures shared with the page's own tests


def _sweep_page(n: int = 4):
    at = _app()
    at.radio(key="gradcam_section").set_value("sweep").run()
    _ok(at)
    at.multiselect(key="gradcam_sweep_methods").set_value(["gradcam", "hirescam"])
    at.select_slider(key="gradcam_sweep_n").set_value(n)
    at.select_slider(key="gradcam_sweep_steps").set_value(8)
    at.button(key="gradcam_sweep_run").click().run()
    _ok(at)
    return at


def test_layer_sweep_shows_the_librarys_ranking_and_uses_the_layer(store):
    at = _sweep_page()
    data = datalib.make_shapes(4, 0, "test")
    want = sweeplib.sweep(trained_model(), data.images, masks=data.masks,
                          methods=["gradcam", "hirescam"], steps=8)
    fig = _figure(at, "gradcam_sweep_fig")["data"][0]
    assert list(fig["y"]) == list(want.layers["layer"])
    z = _array(fig["z"]).astype(float).reshape(len(want.layers), 2)
    for i, layer in enumerate(want.layers["layer"]):
        for j, m in enumerate(["gradcam", "hirescam"]):
            row = want.table[(want.table["layer"] == layer) & (want.table["method"] == m)]
            assert z[i, j] == pytest.approx(float(row["score"].iloc[0]), abs=1e-5)
    assert any(want.recommended in s.value and "ranks first" in s.value for s in at.success)
    ranked = at.dataframe[0].value
    assert list(ranked["layer"]) == list(want.layers["layer"])
    at.button(key="gradcam_sweep_use").click().run()
    _ok(at)
    assert at.selectbox(key="gradcam_layer").value == want.recommended
    panels = _figure(at, "gradcam_panels")  # the page's CAM now uses that layer
    assert panels["data"][1]["type"] == "heatmap"
    assert any(f"**Layer:** {want.recommended}" in m.value for m in at.markdown)


def test_a_failing_sweep_is_one_error(store, monkeypatch):
    def broken(*_a, **_k):
        raise CamError("no candidate layer here")

    monkeypatch.setattr(sweeplib, "sweep", broken)
    at = _app()
    at.radio(key="gradcam_section").set_value("sweep").run()
    at.button(key="gradcam_sweep_run").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Layer sweep: no candidate layer here"]


TINY = dict(steps=6, n_train=128, batch_size=32, n_test=0)


def _tiny(config, steps, progress):
    return CT.train_checkpoints(dataclasses.replace(config, **TINY), [0, 3, 6], progress)


@pytest.mark.parametrize("kind", ["shapes", "bias"])
def test_cams_over_training_animate_the_checkpoints(store, monkeypatch, kind):
    from dashboard.components import cam_trust

    monkeypatch.setattr(cam_trust, "_cached_checkpoints", _tiny)
    at = _app()
    at.radio(key="gradcam_section").set_value("training").run()
    _ok(at)
    at.radio(key="gradcam_train_kind").set_value(kind)
    at.selectbox(key="gradcam_train_method").set_value("gradcam")
    at.button(key="gradcam_train_run").click().run()
    _ok(at)
    fig = _figure(at, "gradcam_train_fig")
    assert [f["name"] for f in fig["frames"]] == ["0", "3", "6"]
    assert [s["label"] for s in fig["layout"]["sliders"][0]["steps"]] == ["0", "3", "6"]
    from hooklab.studies.train import TrainConfig

    if kind == "shapes":
        ck = _tiny(TrainConfig(), None, None)
        data = datalib.make_shapes(6, 0, "test")
        cams = CT.cams_over_training(ck, data.images, method="gradcam")
        images = [datalib.to_display(x) for x in data.images]
        for k in range(3):
            for c in (0, 5):
                z = _array(fig["frames"][k]["data"][c]["z"])
                want = C.to_uint8(C.overlay(images[c], cams.maps[k, c].numpy(), 0.4))
                assert np.abs(z.reshape(want.shape).astype(int) - want.astype(int)).max() <= 1
    else:
        curves = _figure(at, "gradcam_train_curves")
        assert len(curves["data"]) == 4 and list(curves["data"][0]["x"]) == [0, 3, 6]
        assert "marker" in fig["layout"]["title"]["text"]
