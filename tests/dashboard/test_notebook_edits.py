"""A run recorded in a notebook (plain hooklab.record + TraceStore.save, meta as the library
writes it) shows its edit with the same text everywhere the dashboard names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import hooklab
from hooklab.core import edits
from hooklab.models.zoo import SimpleCNN
from hooklab.store.runs import TraceStore

VIEWS = Path(__file__).resolve().parents[2] / "dashboard" / "views"
TIMEOUT = 120
TEXT = "conv2=scale(0.5)"  # hooklab.core.edits.describe of the notebook's edit


@pytest.fixture
def notebook_run(store_dir):
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with hooklab.record(model, edits={"conv2": edits.scale(0.5)}) as rec:
        rec.run(x)
    store = TraceStore(store_dir)
    rid = store.save(rec.trace, author="nb")
    assert edits.describe(store.manifest(rid)["meta"]["edits"]) == TEXT
    return store, rid


def _open(view: str, **query) -> AppTest:
    at = AppTest.from_file(str(VIEWS / view), default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not at.error, [e.value for e in at.error]
    return at


def test_runs_table_and_detail_show_the_edit(notebook_run):
    _, rid = notebook_run
    at = _open("runs.py")
    table = at.dataframe[0].value
    assert list(table.loc[table["run_id"] == rid, "edits"]) == [TEXT]
    at = _open("runs.py", run=rid)
    assert any(f"`{TEXT}`" in m.value for m in at.markdown)


def test_inspector_banner_shows_the_edit(notebook_run):
    _, rid = notebook_run
    at = _open("inspector.py", run=rid)
    banner = [i.value for i in at.info if rid in i.value]
    assert len(banner) == 1 and TEXT in banner[0] and "no edit" not in banner[0]


def test_compare_views_show_the_edit(notebook_run):
    store, rid = notebook_run
    at = _open("compare.py", run=rid)  # the Compare page, opened on it
    banner = [i.value for i in at.info if rid in i.value]
    assert len(banner) == 1 and TEXT in banner[0]
    # the Runs page's comparison of two runs: the notebook run against one without an edit
    model = SimpleCNN().eval()
    with hooklab.record(model) as rec:
        rec.run(torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    other = store.save(rec.trace, author="nb")
    at = _open("runs.py")
    at.selectbox(key="runs_cmp_a").select(other)
    at.selectbox(key="runs_cmp_b").select(rid)
    at.toggle(key="runs_cmp_on").set_value(True).run()
    assert not at.exception and not at.error
    line = next(m.value for m in at.markdown if f"**B** {rid}" in m.value)
    assert f"**B** {rid}: `{TEXT}`" in line and f"**A** {other}: `no edit`" in line
