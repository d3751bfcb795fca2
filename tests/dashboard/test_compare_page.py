"""AppTest of Compare edits: default halving gives 0.5 upstream / 1.0 downstream; errors; runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import figures

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "compare.py")
TIMEOUT = 120


@pytest.fixture
def app(store_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _charts(at):
    return figures(at)


def _ratio_chart(at):
    return next(c for c in _charts(at) if c["layout"]["title"]["text"].startswith(
        "Gradient-norm ratio"))


def _bar_values(chart) -> dict[str, float]:
    bar = chart["data"][0]
    y = bar["y"]
    if isinstance(y, dict):  # plotly's typed-array JSON: {"dtype": "f4", "bdata": base64}
        import base64

        y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"])).tolist()
    return dict(zip(bar["x"], y, strict=True))


def test_default_halving_ratios(app):
    assert app.text_area(key="compare_b_edits").value == "conv2=scale(0.5)"
    assert app.text_area(key="compare_a_edits").value == ""
    app.button(key="compare_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    r = _bar_values(_ratio_chart(app))
    assert r["input"] == pytest.approx(0.5, rel=1e-5)
    assert r["conv1 (param)"] == pytest.approx(0.5, rel=1e-5)
    assert r["conv2 (param)"] == pytest.approx(0.5, rel=1e-5)
    for layer in ("conv3", "fc1", "fc2"):
        assert r[f"{layer} (param)"] == pytest.approx(1.0, rel=1e-5)
    titles = [c["layout"]["title"]["text"] for c in _charts(app)]
    assert any(x.startswith("Input gradients") for x in titles)
    assert any(x.startswith("CAM difference") for x in titles)
    # output gradients: conv1 upstream halved, conv3 downstream unchanged
    app.radio(key="live_quantity").set_value("grad_output").run()
    r = _bar_values(_ratio_chart(app))
    assert r["conv1 (out)"] == pytest.approx(0.5, rel=1e-5)
    assert r["conv3 (out)"] == pytest.approx(1.0, rel=1e-5)


def test_unknown_layer_and_bad_edit_are_one_error(app):
    app.text_area(key="compare_b_edits").set_value("conv9=scale(0.5)").run()
    app.button(key="compare_run").click().run()
    assert not app.exception
    assert len(app.error) == 1 and "conv9" in app.error[0].value
    app.text_area(key="compare_b_edits").set_value("conv2=frobnicate(1)").run()
    app.button(key="compare_run").click().run()
    assert not app.exception and len(app.error) == 1
    # the page keeps working
    app.text_area(key="compare_b_edits").set_value("conv1=zero()").run()
    app.button(key="compare_run").click().run()
    assert not app.exception and not app.error
    r = _bar_values(_ratio_chart(app))
    assert r["conv1 (param)"] == 0.0 and r["fc2 (param)"] == pytest.approx(1.0)


def test_save_and_reopen(app, store_dir):
    app.button(key="compare_run").click().run()
    app.button(key="compare_save").click().run()
    assert not app.exception and not app.error
    run_id = app.success[0].value.split()[-1]
    from hooklab.store.runs import TraceStore

    trace = TraceStore(store_dir).load(run_id)
    assert trace.meta["page"] == "compare"
    assert trace.meta["settings"]["config_b_text"] == "conv2=scale(0.5)"
    before = _bar_values(_ratio_chart(app))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception and not at.error
    assert _bar_values(_ratio_chart(at)) == pytest.approx(before)


def test_over_training_mode(app, store_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_CACHE", str(tmp_path / "cache"))
    app.radio(key="compare_mode").set_value("training").run()
    assert not app.exception
    app.slider(key="compare_steps").set_value(5).run()
    app.button(key="compare_train").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    charts = _charts(app)
    curves = next(c for c in charts if c["layout"]["title"]["text"].startswith("Training"))
    assert {d["name"] for d in curves["data"]} == {"A", "B"}
    norms = next(c for c in charts if "norms over training" in c["layout"]["title"]["text"])
    assert {"conv1", "fc2"} <= {d["name"] for d in norms["data"]}
    assert [m.label for m in app.metric][:2] == ["test accuracy A", "test accuracy B"]
    app.button(key="compare_save").click().run()
    run_id = app.success[0].value.split()[-1]
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception and not at.error
    assert any("norms over training" in c["layout"]["title"]["text"] for c in _charts(at))
