"""AppTest of the Runs page: list, filter, detail + share link, notes/tags, trash, import,
compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import hooklab
from hooklab.core import edits
from hooklab.models.zoo import seed_model
from hooklab.store.runs import TraceStore
from tests.dashboard.conftest import plotly_array, run_page

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "runs.py")
TIMEOUT = 90


def _trace(edit: bool, page: str = "inspector"):
    model = seed_model()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with hooklab.record(model, layers=["conv", "fc"],
                        edits={"fc": edits.scale(0.5)} if edit else None,
                        meta={"page": page, "model": "simple_model"}) as rec:
        rec.run(x, target="sum")
    return rec.trace


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    from dashboard import state

    state.store.clear()  # the cached store of another test points elsewhere
    yield TraceStore(tmp_path / "runs")
    state.store.clear()


def _app(**query) -> AppTest:
    return run_page(PAGE, TIMEOUT, **query)


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


_array = plotly_array


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + \
            [c.value for c in at.code] + [s.value for s in at.subheader]
    return "\n".join(parts)


def test_empty_store_says_so(store):
    at = _app()
    assert not at.exception and not at.error
    assert at.title[0].value == "Runs"
    assert any("No runs yet" in i.value for i in at.info)


def test_list_filter_and_share_link(store):
    a = store.save(_trace(False), author="ana", notes="baseline", tags=["seed"])
    b = store.save(_trace(True), author="bo", notes="halve fc gradient", tags=["seed", "halve"])
    at = _app()
    assert not at.exception and not at.error
    df = at.dataframe[0].value
    assert set(df["run_id"]) == {a, b} and len(df) == 2
    at.text_input(key="runs_search").input("HALVE").run()
    assert list(at.dataframe[0].value["run_id"]) == [b]
    at.text_input(key="runs_search").input("").run()
    at.multiselect(key="runs_authors").select("ana").run()
    assert list(at.dataframe[0].value["run_id"]) == [a]

    at = _app(run=b)
    assert not at.error
    text = _texts(at)
    assert f"Run {b}" in text
    assert f"/runs?run={b}" in text  # the share link of this view
    assert f"/inspector?run={b}" in text  # the view of the page that made it
    # (the canonical edit text, hooklab.core.edits.describe, is "fc=scale(0.5)")
    assert "fc: scale(0.5)" in text or "fc:scale(0.5)" in text or "fc=scale(0.5)" in text


def test_unknown_run_is_one_error_and_list_still_works(store):
    a = store.save(_trace(False), author="ana")
    at = _app(run="no-such-run")
    assert len(at.error) == 1 and "no-such-run" in at.error[0].value
    assert not at.exception
    assert list(at.dataframe[0].value["run_id"]) == [a]


def test_edit_notes_and_tags(store):
    a = store.save(_trace(False), author="ana", notes="old")
    at = _app(run=a)
    at.text_area(key=f"runs_notes_{a}").input("new notes")
    at.text_input(key=f"runs_tagtext_{a}").input("x, y ,x")
    at.button(key=f"runs_save_meta_{a}").click().run()
    assert not at.error and not at.exception
    m = store.manifest(a)
    assert m["notes"] == "new notes" and m["tags"] == ["x", "y"]


def test_delete_restore_and_export_import(store):
    a = store.save(_trace(False), author="ana")
    at = _app(run=a)
    at.button(key=f"runs_delete_{a}").click().run()
    assert not at.error
    assert a not in store.run_ids() and a in set(store.trash_list()["run_id"])
    assert any("trash" in s.value for s in at.success)
    at.button(key="runs_restore_btn").click().run()
    assert a in store.run_ids()

    zip_bytes = Path(store.export(a, store.root.parent / "a.zip")).read_bytes()
    at = _app()
    at.file_uploader(key="runs_import_file").upload("a.zip", zip_bytes, "application/zip").run()
    at.button(key="runs_import_btn").click().run()
    assert not at.error and not at.exception
    assert len(store.run_ids()) == 2  # same id already present: imported under a new id


def test_bad_import_is_one_error_and_page_keeps_working(store):
    store.save(_trace(False), author="ana")
    at = _app()
    at.file_uploader(key="runs_import_file").upload("evil.zip", b"not a zip at all",
                                                    "application/zip").run()
    at.button(key="runs_import_btn").click().run()
    assert len(at.error) == 1
    assert not at.exception
    at.text_input(key="runs_search").input("ana").run()  # still interactive
    assert not at.exception and len(at.dataframe[0].value) == 1


def test_compare_two_runs_shows_norm_ratio(store):
    a = store.save(_trace(False), author="ana")
    b = store.save(_trace(True), author="bo")
    at = _app()
    at.selectbox(key="runs_cmp_a").select(a).run()
    at.selectbox(key="runs_cmp_b").select(b).run()
    at.toggle(key="runs_cmp_on").set_value(True).run()
    assert not at.error and not at.exception
    figs = [f for f in _figures(at) if any(tr.get("name") == "B / A" for tr in f["data"])]
    assert figs, "no norm comparison chart"
    ratio = next(tr for tr in figs[0]["data"] if tr.get("name") == "B / A")
    layers = list(ratio["x"])
    r = dict(zip(layers, _array(ratio["y"])))
    # halving fc's output gradient halves everything upstream (conv), fc's own stays
    assert r["conv"] == pytest.approx(0.5, rel=1e-5)
    assert r["fc"] == pytest.approx(1.0, rel=1e-5)
