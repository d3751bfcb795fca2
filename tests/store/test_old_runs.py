"""A run directory written by an older hooklab (format version 1, before streamed runs) still
opens: tests/store/fixtures/v1-run was written by ``TraceStore.save`` before the store learned
the streamed ("watch") format and is committed unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hooklab.store.runs import TraceStore

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def old_store(tmp_path) -> TraceStore:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES, root)  # the store writes .trash; keep the repository clean
    return TraceStore(root)


def test_v1_run_lists_loads_and_verifies(old_store):
    rows = old_store.list()
    assert rows["run_id"].tolist() == ["v1-run"]
    row = rows.iloc[0]
    assert row["status"] == "ok" and row["author"] == "fixture" and row["n_events"] == 14
    assert row["tags"] == "fixture,v1" and row["model"] == "Sequential"
    old_store.verify("v1-run")
    m = old_store.manifest("v1-run")
    assert m["format_version"] == 1 and m.get("kind", "trace") != "watch"
    trace = old_store.load("v1-run")
    ev = trace.events
    assert len(ev) == 14 and len(trace.tensor_keys()) == 12
    # the edit's two sides are intact: after = 0.5 x before on layer "2"
    before = ev[(ev.layer == "2") & (ev.role == "grad_output")].iloc[0]
    after = ev[(ev.layer == "2") & (ev.role == "edited")].iloc[0]
    assert torch.allclose(trace.tensor(after["key"]), 0.5 * trace.tensor(before["key"]))
    assert after["norm"] == pytest.approx(0.5 * before["norm"])


def test_v1_run_events_query_and_trash(old_store):
    assert len(old_store.events("v1-run")) == 14
    q = old_store.query(layer="0", role="output")
    assert q["run_id"].tolist() == ["v1-run"]
    old_store.delete("v1-run")
    assert old_store.list().empty
    old_store.restore("v1-run")
    old_store.verify("v1-run")
