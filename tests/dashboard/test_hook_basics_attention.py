"""AppTest of the Hook basics page's attention lesson: the pre-hook snippet beside its printed
lines and the per-head class-token maps; the block slider changes both; Chinese labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from hooklab.studies import lessons
from tests.dashboard.conftest import figures, plotly_array

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "hook_basics.py")
TIMEOUT = 180


@pytest.fixture
def app(store_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _heads_figure(at):
    found = [f for f in figures(at) if "class token" in f["layout"]["title"]["text"]
             or "类别 token" in f["layout"]["title"]["text"]]
    assert len(found) == 1
    return found[0]


def test_snippet_lines_and_head_maps(app):
    lesson = lessons.attention_lesson(3, 0, model=lessons.attention_model())
    codes = [c.value for c in app.code]
    assert lessons.code("attention", "en", block=3) in codes
    assert "\n".join(lesson.lines) in codes
    fig = _heads_figure(app)
    assert fig["layout"]["title"]["text"] == "class token → patches, block 3"
    types = [d["type"] for d in fig["data"]]
    assert types == ["image"] + ["heatmap"] * 4
    for i, d in enumerate(fig["data"][1:]):
        z = plotly_array(d["z"]).reshape(8, 8)
        np.testing.assert_allclose(z, lesson.maps[i].numpy(), rtol=1e-6, atol=1e-7)
    shown = " ".join(m.value for m in app.markdown)
    assert "equals q, k by hand: **✓**" in shown and "model output unchanged: **✓**" in shown
    assert not app.error


def test_block_slider_changes_code_and_maps(app):
    app.slider(key="attn_block").set_value(1).run()
    assert not app.exception and not app.error
    codes = [c.value for c in app.code]
    assert lessons.code("attention", "en", block=1) in codes
    assert not any("encoder_layer_3.self_attention" in c for c in codes)
    assert _heads_figure(app)["layout"]["title"]["text"].endswith("block 1")


def test_chinese(store_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["hooklab_lang"] = "zh"
    at.run()
    assert not at.exception and not at.error
    codes = [c.value for c in at.code]
    assert lessons.code("attention", "zh", block=3) in codes
    assert any(c.startswith("调用方传入 need_weights=False") for c in codes)
    assert _heads_figure(at)["layout"]["title"]["text"] == "类别 token → 图块，第 3 块"
