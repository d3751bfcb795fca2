"""AppTest of the Inspector: defaults run, timeline + events, tensor view, errors, save/reopen."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import figures

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "inspector.py")
TIMEOUT = 120


@pytest.fixture
def app(store_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _charts(at):
    return figures(at)


def test_defaults_run_shows_timeline_and_events(app):
    assert app.selectbox(key="inspector_model").value == "simple_cnn"
    app.button(key="inspector_run").click().run()  # speed: benchmarks/bench_dashboard.py
    assert not app.exception and not app.error, [e.value for e in app.error]
    charts = _charts(app)
    timeline = charts[0]
    assert "timeline" in timeline["layout"]["title"]["text"].lower()
    kinds = {d["name"] for d in timeline["data"]}
    assert {"forward_pre", "forward", "tensor", "post_accumulate_grad"} <= kinds
    table = app.dataframe[0].value
    assert len(table) > 20 and {"layer", "role", "norm", "flag"} <= set(table.columns)
    assert {"conv1", "conv2", "conv3", "fc1", "fc2"} <= set(table["layer"])
    # the selected event's tensor view: channel maps, histogram, activation | gradient
    titles = [c["layout"]["title"]["text"] for c in charts]
    assert any("histogram" in x for x in titles)
    assert any(x.startswith("activation | gradient") for x in titles)


def test_select_event_and_channel(app):
    app.button(key="inspector_run").click().run()
    labels = app.selectbox(key="live_event").options
    idx = next(i for i, lab in enumerate(labels) if " conv2 output" in lab)
    app.selectbox(key="live_event").set_value(idx).run()
    app.selectbox(key="live_channel").set_value(3).run()
    assert not app.exception and not app.error
    pair = next(c for c in _charts(app) if c["layout"]["title"]["text"].startswith("activation"))
    ann = [a["text"] for a in pair["layout"]["annotations"]]
    assert "activation (channel 3)" in ann and "gradient (channel 3)" in ann


def test_unknown_layer_is_one_clean_error(app):
    app.text_input(key="inspector_layers_free").set_value("conv99").run()
    app.button(key="inspector_run").click().run()
    assert not app.exception
    assert len(app.error) == 1
    assert "conv99" in app.error[0].value and "conv" in app.error[0].value
    # the page keeps working: fix the name, run again
    app.text_input(key="inspector_layers_free").set_value("conv*").run()
    app.button(key="inspector_run").click().run()
    assert not app.exception and not app.error
    assert set(app.dataframe[0].value["layer"]) == {"conv1", "conv2", "conv3"}


def test_bad_edit_and_refused_hook_kind_are_errors(app):
    app.text_area(key="inspector_edits").set_value("conv2=scale(").run()
    app.button(key="inspector_run").click().run()
    assert not app.exception and len(app.error) == 1
    app.text_area(key="inspector_edits").set_value("conv2=halve").run()
    app.multiselect(key="inspector_hooks").set_value(["full_backward", "backward"]).run()
    app.button(key="inspector_run").click().run()
    assert not app.exception and len(app.error) == 1
    app.multiselect(key="inspector_hooks").set_value(["full_backward"]).run()
    app.button(key="inspector_run").click().run()
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert "full_backward" in set(table["kind"]) and "edited" in set(table["role"])


def test_save_and_reopen_same_view(app, store_dir):
    app.text_area(key="inspector_edits").set_value("conv2=scale(0.5)").run()
    app.button(key="inspector_run").click().run()
    labels = app.selectbox(key="live_event").options
    idx = next(i for i, lab in enumerate(labels) if " conv3 output" in lab)
    app.selectbox(key="live_event").set_value(idx).run()
    app.button(key="inspector_save").click().run()
    assert not app.exception and not app.error
    run_id = app.success[0].value.split()[-1]
    from hooklab.store.runs import TraceStore

    trace = TraceStore(store_dir).load(run_id)
    assert trace.meta["page"] == "inspector"
    assert trace.meta["settings"]["edits_text"] == "conv2=scale(0.5)"
    assert trace.meta["settings"]["model"]["name"] == "simple_cnn"
    n = len(app.dataframe[0].value)

    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception and not at.error
    assert any(run_id in i.value for i in at.info)
    assert len(at.dataframe[0].value) == n
    sel = at.selectbox(key="stored_event")
    assert " conv3 output" in sel.options[sel.index]
    assert at.text_area(key="inspector_edits").value == "conv2=scale(0.5)"


def test_uploads_bad_image_and_mismatched_weights_are_one_error(app, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from hooklab.models.weights import save_safetensors
    from hooklab.models.zoo import SimpleModel

    app.radio(key="inspector_source").set_value("upload").run()
    app.file_uploader(key="inspector_image").set_value(
        ("notes.txt", b"this is not an image", "text/plain")).run()
    assert not app.exception and len(app.error) == 1, [e.value for e in app.error]
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8")).save(
        buf, format="PNG")
    app.file_uploader(key="inspector_image").set_value(("cat.png", buf.getvalue(),
                                                        "image/png")).run()
    app.button(key="inspector_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert len(app.dataframe[0].value) > 20

    path = tmp_path / "wrong.safetensors"
    save_safetensors(SimpleModel(), path)
    app.radio(key="inspector_weights").set_value("upload").run()
    app.file_uploader(key="inspector_wfile").set_value(
        ("wrong.safetensors", path.read_bytes(), "application/octet-stream")).run()
    assert not app.exception and len(app.error) == 1
    assert "conv" in app.error[0].value  # names what does not fit


def test_statistics_only_mode(app):
    app.checkbox(key="inspector_keep").uncheck().run()
    app.button(key="inspector_run").click().run()
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert len(table) > 20 and table["norm"].notna().all()
    assert any("statistics only" in i.value for i in app.info)
