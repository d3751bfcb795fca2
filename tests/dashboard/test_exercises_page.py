"""AppTest of issue 15 on the Hook basics page: the backward graph with its hooks (DOT), the hook
doctor, exercises answered right and wrong against the live computation, an attempt saved under
the student's name and visible on the Runs page, grouped by exercise."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from hooklab.studies import exercises as ex_lib

ROOT = Path(__file__).resolve().parents[2]
BASICS = str(ROOT / "dashboard" / "views" / "hook_basics.py")
RUNS = str(ROOT / "dashboard" / "views" / "runs.py")
INSPECTOR = str(ROOT / "dashboard" / "views" / "inspector.py")
TIMEOUT = 180


@pytest.fixture
def app(store_dir):
    at = AppTest.from_file(BASICS, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _frame(at, *columns: str):
    """The first dataframe on the page having ``columns`` (AppTest drops dataframe keys)."""
    for df in at.dataframe:
        if set(columns) <= set(df.value.columns):
            return df.value
    raise AssertionError(f"no table with {columns}")


def _dot(at) -> str:
    (chart,) = at.get("graphviz_chart")
    return chart.proto.spec


def test_graph_is_shown_with_numbered_hooks_and_the_edit(app):
    dot = _dot(app)
    assert dot.startswith("digraph backward {")
    assert "edit: scale(0.5)" in dot and "①" in dot
    table = _frame(app, "order", "kind", "node")
    assert list(table["order"].dropna().astype(int)) == list(range(1, len(table) + 1))
    assert set(table["layer"]) == {"conv1", "conv2", "conv3"}
    # adding the deprecated hook on conv3 draws it on conv3's last node
    app.multiselect(key="graph_kinds").select("backward")
    app.selectbox(key="graph_layer").select("conv3").run()
    assert not app.exception, app.exception
    dot = _dot(app)
    assert "register_backward_hook (deprecated)" in dot


def test_hook_doctor_shows_four_leaked_hooks(app):
    inv = _frame(app, "looks_leaked", "reason")
    assert len(inv) == 4 and inv["looks_leaked"].all() and set(inv["module"]) == {"conv3"}


def test_tensor_exercise_right_then_wrong_then_saved_and_on_runs_page(app, store_dir):
    key = "hook_basics_ex_tensor-k"
    app.number_input(key=f"{key}_k").set_value(0.25)
    app.number_input(key=f"{key}_answer").set_value(48.0)
    app.button(key=f"{key}_check").click().run()
    assert not app.exception, app.exception
    assert any("Right!" in s.value for s in app.success)
    app.number_input(key=f"{key}_answer").set_value(96.0)
    app.button(key=f"{key}_check").click().run()
    assert any("Not quite." in e.value and "48" in e.value for e in app.error)
    app.text_input(key="hook_basics_student").input("ana")
    app.button(key=f"{key}_save").click().run()
    assert not app.exception, app.exception
    assert any("under ana" in s.value for s in app.success)
    from hooklab.store.runs import TraceStore

    answers = ex_lib.class_answers(TraceStore(store_dir))
    assert list(answers["student"]) == ["ana"] and not answers["correct"].iloc[0]
    assert answers["answer"].iloc[0] == "96.0"

    runs = AppTest.from_file(RUNS, default_timeout=TIMEOUT)
    runs.run()
    assert not runs.exception, runs.exception
    summary = _frame(runs, "attempts", "correct_share")
    row = summary.set_index("exercise").loc["tensor-k"]
    assert row["attempts"] == 1 and row["correct"] == 0
    detail = _frame(runs, "student", "answer", "truth")
    assert list(detail["student"]) == ["ana"]


def test_backward_len_exercise_and_a_missing_answer(app):
    key = "hook_basics_ex_grad-input-len"
    app.button(key=f"{key}_check").click().run()
    assert any("no answer" in e.value for e in app.error)  # one message, no traceback
    assert not app.exception
    for kind, n in {"backward": 3, "full_backward": 1, "full_backward_pre": 0,
                    "tensor": 0}.items():
        app.number_input(key=f"{key}_{kind}").set_value(n)
    app.button(key=f"{key}_check").click().run()
    assert any("Right!" in s.value for s in app.success)


def test_cam_exercise_checked_against_the_live_map(app):
    ex = ex_lib.load_set().get("cam-peak")
    peak = ex_lib.truth(ex)
    key = "hook_basics_ex_cam-peak"
    app.number_input(key=f"{key}_row").set_value(peak[0])
    app.number_input(key=f"{key}_col").set_value(peak[1])
    app.button(key=f"{key}_check").click().run()
    assert not app.exception, app.exception
    assert any("Right!" in s.value for s in app.success)


def test_inspector_offers_the_exercises(store_dir):
    at = AppTest.from_file(INSPECTOR, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="inspector_ex_halve-conv2_check") is not None


def test_instructor_file_from_env_and_a_bad_one(store_dir, tmp_path, monkeypatch):
    from dashboard.components import exercises as ui

    good = tmp_path / "lab.toml"
    good.write_text('format = 1\nid = "lab"\ntitle = "Lab 2"\n[[exercises]]\nid = "only"\n'
                    'kind = "tensor_grad"\nquestion = "Predict x.grad for k = 3."\nk = 3\n'
                    "choose_k = false\n", encoding="utf-8")
    monkeypatch.setenv("HOOKLAB_EXERCISES", str(good))
    ui._default_set.clear()
    at = AppTest.from_file(BASICS, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert any("Predict x.grad for k = 3." in m.value for m in at.markdown)
    at.number_input(key="hook_basics_ex_only_answer").set_value(576.0)
    at.button(key="hook_basics_ex_only_check").click().run()
    assert any("Right!" in s.value for s in at.success)
    bad = tmp_path / "bad.toml"
    bad.write_text("format = 1\nid = 'x'\n", encoding="utf-8")
    monkeypatch.setenv("HOOKLAB_EXERCISES", str(bad))
    ui._default_set.clear()
    at = AppTest.from_file(BASICS, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert any("no exercises" in e.value for e in at.error)
    assert at.get("graphviz_chart")  # the rest of the page is still there
    ui._default_set.clear()


def test_a_saved_attempt_opens_on_hook_basics(store_dir):
    from hooklab.store.runs import TraceStore

    ex_set = ex_lib.load_set()
    rid = ex_lib.save_attempt(TraceStore(store_dir), ex_set,
                              ex_lib.check(ex_set.get("tensor-k"), 96.0), "ana")
    at = AppTest.from_file(BASICS, default_timeout=TIMEOUT)
    at.query_params["run"] = rid
    at.run()
    assert not at.exception, at.exception


def test_graph_collapses_and_speaks_chinese(app):
    app.toggle(key="graph_collapse").set_value(True).run()
    assert not app.exception, app.exception
    assert "box3d" in _dot(app) and "ConvolutionBackward0" not in _dot(app)
    app.session_state["hooklab_lang"] = "zh"
    app.run()
    assert not app.exception, app.exception
    assert "张量钩子" in _dot(app) and "修改: scale(0.5)" in _dot(app)
