"""AppTest of the Hook basics page: the seed's lessons, the factor slider (96 at 0.5), saving."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from hooklab.studies import lessons

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "hook_basics.py")
TIMEOUT = 90


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    from dashboard import state

    state.store.clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    yield at
    state.store.clear()


def _text(at) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.metric] + \
        [c.value for c in at.code] + [str(x.value) for x in at.latex]
    return "\n".join(parts)


def _xgrad(at) -> str:
    return next(m.value for m in at.metric if m.label == "x.grad")


def test_slider_factor_gives_192k(app):
    slider = app.slider(key="tensor_k")
    assert "factor" in slider.label
    slider.set_value(1.0).run()
    assert not app.exception
    assert _xgrad(app) == "192"
    slider.set_value(0.5).run()
    assert _xgrad(app) == "96"
    text = _text(app)
    assert "48\\cdot 0.5\\cdot 4 = 96" in text  # the chain rule with live numbers
    assert "x.grad: tensor([96.])" in text
    slider.set_value(0.25).run()
    assert _xgrad(app) == "48"
    assert not app.error
    # the tensor snippet shown is the one with the slider's k
    shown = [c.value for c in app.code if "register_hook" in c.value]
    assert shown == [lessons.code("tensor", "en", k=0.25)]
    assert shown[0].startswith("k = 0.25 ")


def test_seed_lessons_shown(app):
    text = _text(app)
    assert "input shape: torch.Size([1, 1, 4, 4])" in text
    assert "output shape: torch.Size([1, 2, 4, 4])" in text
    # deprecated vs full, side by side: 3 vs 1 grad_input entries
    counts = [m.value for m in app.metric if m.label == "len(grad_input)"]
    assert counts == ["3", "1"]
    charts = app.get("plotly_chart")
    assert len(charts) >= 5
    panels = charts[0].proto.spec
    assert '"channel 2"' in panels or "channel 2" in panels
    assert not app.error


def test_save_run_then_open_it(app, tmp_path):
    app.slider(key="tensor_k").set_value(0.75).run()
    app.button(key="hook_basics_save").click().run()
    assert not app.exception and not app.error
    ok = [s.value for s in app.success]
    assert ok and "Saved as run" in ok[0]
    run_id = ok[0].split()[-1]
    from hooklab.store.runs import TraceStore

    store = TraceStore(tmp_path / "runs")
    trace = store.load(run_id)
    assert trace.meta["page"] == "hook_basics" and trace.meta["k"] == 0.75
    # the share link opens the same view (k restored)
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception and not at.error
    assert at.slider(key="tensor_k").value == 0.75
    assert _xgrad(at) == f"{192 * 0.75:g}"


def test_unknown_run_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    from dashboard import state

    state.store.clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.query_params["run"] = "20260101-000000-deadbeef"
    at.run()
    assert not at.exception
    assert len(at.error) == 1
    state.store.clear()


def test_lesson_numbers_match_library():
    assert lessons.tensor_hook_lesson(0.5).x_grad == 96.0


def test_chinese_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["hooklab_lang"] = "zh"
    at.run()
    assert not at.exception and not at.error
    assert "梯度因子" in at.slider(key="tensor_k").label
    assert at.title[0].value == "Hook 基础"
    assert _xgrad(at) == "96"
    # the printed lines and the shown code speak Chinese, with the seed's words
    text = _text(at)
    for line in ("原始梯度: tensor([48.])", "x的梯度: tensor([96.])", "计算结果是: 8",
                 "输入形状: torch.Size([1, 1, 4, 4])", "输入梯度数量: 3"):
        assert line in text, line
    for english in ("gradient seen:", "x.grad: tensor", "input shape:", "result: 8",
                    "number of grad_input"):
        assert english not in text, english
    assert lessons.code("tensor", "zh", k=0.5) in [c.value for c in at.code]
