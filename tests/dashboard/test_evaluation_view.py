"""AppTest of the Runs page's evaluation view on a store holding real (small) evaluations: the
spec, the status, the summary and per-image tables equal what the store holds, the chart
carries the per-image values, an interrupted run says how far it got; no exception, no error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.components.text import code
from hooklab.store.runs import TraceStore
from hooklab.studies.evaluation import evaluate, read_evaluation
from tests.dashboard.conftest import figures, plotly_array, run_page

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "runs.py")
TIMEOUT = 120
ROOT = Path(__file__).resolve().parents[2]
ARGS = dict(n=8, batch_size=4, methods=["gradcam"], metrics=["deletion", "insertion",
                                                              "pointing"], steps=8)


class _Stop(Exception):
    pass


def _stop_after_first_chunk(done: int, total: int) -> None:
    if 0 < done < total:
        raise _Stop("interrupted by the test [x](http://h/p)")


#: A writer that ends its process (no exception, no close) once its first chunk is stored.
DYING = """
import os, sys
from hooklab.studies.evaluation import evaluate
def die(done, total):
    if 0 < done < total:
        os._exit(0)
evaluate("simple_cnn", "shapes", store=sys.argv[1], progress=die, n=12, batch_size=4,
         methods=["gradcam"], metrics=["deletion"], steps=8)
"""


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """A store with one finished evaluation, one interrupted (an exception) after its first
    chunk and one whose writer process ended after its first chunk."""
    root = tmp_path_factory.mktemp("eval-view") / "runs"
    store = TraceStore(root)
    done = evaluate("simple_cnn", "shapes", store=store, **ARGS)
    with pytest.raises(_Stop):
        evaluate("simple_cnn", "shapes", store=store, progress=_stop_after_first_chunk,
                 **{**ARGS, "n": 12})
    (cut,) = [r for r in store.list()["run_id"] if r != done.run_id]
    subprocess.run([sys.executable, "-c", DYING, str(root)], cwd=ROOT, check=True, timeout=240)
    (dead,) = [r for r in store.list()["run_id"] if r not in (done.run_id, cut)]
    return root, done.run_id, cut, dead


@pytest.fixture
def store_env(evals, monkeypatch):
    root, done, cut, dead = evals
    monkeypatch.setenv("HOOKLAB_STORE", str(root))
    from dashboard import state

    state.store.clear()
    yield TraceStore(root), done, cut, dead
    state.store.clear()


def _frame(at, column):
    """The one table on the page with that column (st.dataframe keys are not in AppTest)."""
    (df,) = [d.value for d in at.dataframe if column in d.value.columns]
    return df


def test_finished_evaluation_shows_the_stored_values(store_env):
    store, rid, _, _ = store_env
    stored = read_evaluation(store, rid)
    at = run_page(PAGE, TIMEOUT, run=rid)
    assert not at.exception and not at.error
    assert "Evaluation" in [s.value for s in at.subheader]
    assert any("Finished: all 8 images scored." in s.value for s in at.success)

    spec = _frame(at, "setting")
    values = dict(zip(spec["setting"], spec["value"], strict=True))
    assert values["Model"] == "simple_cnn" and values["Data"] == "shapes (test)"
    assert values["Images"] == "8" and values["Methods"] == "gradcam"
    assert values["Layers"] == ", ".join(stored.spec.layers)
    assert values["Metrics"] == "pointing, deletion, insertion"

    summary = _frame(at, "mean ± sd")
    assert list(summary["metric"]) == list(stored.summary["metric"])
    np.testing.assert_array_equal(summary["mean"].to_numpy(), stored.summary["mean"].to_numpy())
    np.testing.assert_array_equal(summary["sd"].to_numpy(), stored.summary["sd"].to_numpy())
    better = dict(zip(summary["metric"], summary["better"], strict=True))
    assert better == {"pointing": "higher", "deletion_auc": "lower", "insertion_auc": "higher"}

    per_image = _frame(at, "insertion_auc")
    assert list(per_image.columns) == list(stored.per_image.columns)
    np.testing.assert_array_equal(per_image["deletion_auc"].to_numpy(),
                                  stored.per_image["deletion_auc"].to_numpy())
    assert "Per-image table (.csv)" in [b.proto.label for b in at.get("download_button")]

    (fig,) = [f for f in figures(at) if any(tr.get("type") == "box" for tr in f["data"])]
    boxes = [tr for tr in fig["data"] if tr["type"] == "box"]
    assert len(boxes) == 3  # one per metric column, one method x layer
    shown = {tuple(np.round(plotly_array(tr["y"]), 5)) for tr in boxes}
    want = {tuple(np.round(stored.per_image[c].to_numpy(np.float32), 5))
            for c in ("pointing", "deletion_auc", "insertion_auc")}
    assert shown == want


def test_interrupted_evaluation_says_how_far_it_got(store_env):
    store, _, rid, _ = store_env
    stored = read_evaluation(store, rid)
    assert stored.per_image["index"].nunique() == 4  # the first chunk only
    at = run_page(PAGE, TIMEOUT, run=rid)
    assert not at.exception and not at.error
    (warning,) = [w.value for w in at.warning if "images scored" in w.value]
    assert "Failed with 4 of 12 images scored" in warning
    assert "interrupted by the test" in warning and "hooklab evaluate" in warning
    assert code("[x](http://h/p)") in warning  # the error's text as text: no link forms
    assert not any("Finished" in s.value for s in at.success)
    summary = _frame(at, "mean ± sd")
    assert list(summary["n"]) == [4, 4, 4]
    np.testing.assert_array_equal(summary["mean"].to_numpy(), stored.summary["mean"].to_numpy())


def test_a_run_whose_writer_died_ended_early(store_env):
    store, _, _, rid = store_env
    assert store.watch_run(rid).status == "ended early"
    at = run_page(PAGE, TIMEOUT, run=rid)
    assert not at.exception and not at.error
    (warning,) = [w.value for w in at.warning if "images scored" in w.value]
    assert warning.startswith("Ended early with 4 of 12 images scored")
    assert "hooklab evaluate" in warning
    summary = _frame(at, "mean ± sd")
    assert list(summary["metric"]) == ["deletion_auc"] and list(summary["n"]) == [4]
    np.testing.assert_array_equal(summary["mean"].to_numpy(),
                                  read_evaluation(store, rid).summary["mean"].to_numpy())


def test_a_run_that_is_no_evaluation_has_no_evaluation_view(store_env, tmp_path):
    store, rid, _, _ = store_env
    at = run_page(PAGE, TIMEOUT)
    assert not at.exception and not at.error
    assert "Evaluation" not in [s.value for s in at.subheader]
    assert {rid} <= set(at.dataframe[0].value["run_id"])


def test_the_view_in_chinese(store_env):
    _, rid, _, _ = store_env
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["hooklab_lang"] = "zh"
    at.query_params["run"] = rid
    at.run()
    assert not at.exception and not at.error
    assert "评估" in [s.value for s in at.subheader]
    assert any("已完成：8 张图像全部评分。" in s.value for s in at.success)
    (fig,) = [f for f in figures(at) if any(tr.get("type") == "box" for tr in f["data"])]
    assert "deletion_auc (越低越好)" in [a["text"] for a in fig["layout"]["annotations"]]
