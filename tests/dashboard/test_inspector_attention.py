"""AppTest of the Inspector's attention view: per-head class-token maps for a ViT, the block
chooser, nothing for a CNN."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import figures, plotly_array

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "inspector.py")
TIMEOUT = 180
LAST = "encoder.layers.encoder_layer_3.self_attention"


@pytest.fixture
def app(store_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _heads(at):
    found = [f for f in figures(at) if f["layout"]["title"]["text"].startswith("class token")]
    assert len(found) == 1, [f["layout"]["title"]["text"] for f in figures(at)]
    return found[0]


def test_vit_shows_per_head_class_token_attention(app):
    app.selectbox(key="inspector_model").set_value("simple_vit").run()
    app.radio(key="inspector_weights").set_value("random").run()  # any weights: attention is there
    app.button(key="inspector_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    sel = app.selectbox(key="live_attn_layer")
    assert sel.value == LAST and len(sel.options) == 4
    fig = _heads(app)
    assert fig["layout"]["title"]["text"] == f"class token → 8×8 patches · {LAST}"
    maps = [plotly_array(d["z"]).reshape(8, 8) for d in fig["data"]]
    assert [d["type"] for d in fig["data"]] == ["heatmap"] * 4
    assert all(m.min() >= 0 for m in maps) and not np.allclose(maps[0], maps[1])
    # what the maps leave to the class token is the share the caption states
    rest = float(np.mean([1 - m.sum() for m in maps]))
    caption = next(c.value for c in app.caption if "goes to the class token" in c.value)
    shown = float(re.search(r"The rest, ([\d.]+)%", caption).group(1)) / 100
    assert abs(rest - shown) < 0.0006

    app.selectbox(key="live_attn_layer").set_value(
        "encoder.layers.encoder_layer_0.self_attention").run()
    assert not app.exception and not app.error
    first = _heads(app)
    assert first["layout"]["title"]["text"].endswith("encoder_layer_0.self_attention")
    assert not np.allclose(plotly_array(first["data"][0]["z"]), maps[0].reshape(-1))


def test_cnn_has_no_attention_view(app):
    app.button(key="inspector_run").click().run()
    assert not app.exception and not app.error
    assert not [s for s in app.subheader if "Attention" in s.value]
    assert not [f for f in figures(app) if f["layout"]["title"]["text"].startswith("class token")]


def test_reopened_vit_run_shows_attention_again(app):
    app.selectbox(key="inspector_model").set_value("simple_vit").run()
    app.radio(key="inspector_weights").set_value("random").run()
    app.button(key="inspector_run").click().run()
    live = _heads(app)
    app.button(key="inspector_save").click().run()
    assert not app.exception and not app.error
    run_id = app.success[0].value.split()[-1]
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="stored_attn_layer").value == LAST
    stored = _heads(at)  # the same model and input, rebuilt from the run's settings
    for a, b in zip(live["data"], stored["data"], strict=True):
        np.testing.assert_allclose(plotly_array(a["z"]), plotly_array(b["z"]), rtol=1e-5)
