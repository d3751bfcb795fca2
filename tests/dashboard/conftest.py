"""Shared AppTest helpers: a per-test run store, figure data out of an AppTest."""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's script runner installs the page as ``sys.modules["__main__"]`` and never puts
    the real one back. Left there, every later multiprocessing child (spawn / forkserver) would
    import the page script as its ``__mp_main__`` and die before running its target (seen as a
    kill test whose writer never started). Put the real one back after each AppTest."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    """$HOOKLAB_STORE in a temporary folder; the dashboard's cached store is reset around it."""
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    from dashboard import state

    state.store.clear()
    yield tmp_path / "runs"
    state.store.clear()


def figures(at: AppTest) -> list[dict]:
    """The Plotly figure JSON of every chart on the page, in order."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def run_page(page: str, timeout: float, **query) -> AppTest:
    """Run a page script once, with optional query parameters (``run=<id>``)."""
    at = AppTest.from_file(page, default_timeout=timeout)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def plotly_array(v) -> np.ndarray:
    """Plotly JSON data: a list, or a typed array {"dtype": .., "bdata": base64}."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v, dtype=float)
