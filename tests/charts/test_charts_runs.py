"""Run-list helpers: display table, filters, share links, two-run norm comparison."""

from __future__ import annotations

import math
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hooklab.charts import runs as R


def _listing() -> pd.DataFrame:
    return pd.DataFrame([
        {"run_id": "r1", "created": "2026-11-26T09:00:00+00:00", "author": "ana",
         "notes": "baseline",
         "tags": ["seed"], "n_events": 4, "meta": {"page": "inspector", "model": "simple_cnn"}},
        {"run_id": "r2", "created": "2026-11-26T10:00:00+00:00", "author": "bo",
         "notes": "halve conv2",
         "tags": ["seed", "edit"], "n_events": 6,
         "meta": {"page": "compare", "model": "simple_cnn",
                  "edits": [{"layer": "conv2", "edit": {"name": "scale", "factor": 0.5}}]}},
        {"run_id": "r3", "created": "2026-11-26T11:00:00+00:00", "author": "ana", "notes": "",
         "tags": [], "n_events": 2, "meta": {"page": "gradcam", "model": "resnet18"}},
    ])


def test_runs_table_newest_first_with_derived_columns():
    t = R.runs_table(_listing())
    assert list(t.columns) == list(R.TABLE_COLUMNS)
    assert list(t["run_id"]) == ["r3", "r2", "r1"]
    assert list(t["page"]) == ["gradcam", "compare", "inspector"]
    assert t.loc[1, "edits"] == "conv2=scale(0.5)"
    assert t.loc[0, "tags"] == [] and t.loc[1, "tags"] == ["seed", "edit"]
    assert str(t["created"].dt.tz) == "UTC"
    assert R.runs_table(pd.DataFrame()).empty


def test_runs_table_prefers_listing_columns_and_string_tags():
    df = pd.DataFrame([{"run_id": "x", "created": "2026-01-01T00:00:00", "author": "c",
                        "model": "simple_model", "page": "hook_basics", "tags": "a, b",
                        "notes": None, "meta": '{"model": "other"}'}])
    t = R.runs_table(df)
    assert t.loc[0, "model"] == "simple_model" and t.loc[0, "tags"] == ["a", "b"]
    assert t.loc[0, "notes"] == ""


def test_edits_text_forms():
    assert R.edits_text(None) == "" and R.edits_text([]) == ""
    assert R.edits_text({"conv2": {"name": "scale", "factor": 0.5}}) == "conv2=scale(0.5)"
    assert R.edits_text([{"layer": "fc", "edit": {"name": "clip", "lo": -1, "hi": 1},
                          "target": "activation"}]) == "fc=clip(lo=-1, hi=1)@activation"
    assert R.edits_text("custom") == "custom"


def test_filter_runs_text_author_tags():
    t = R.runs_table(_listing())
    assert list(R.filter_runs(t, text="HALVE")["run_id"]) == ["r2"]
    # words are AND-ed, edits are searched too
    assert list(R.filter_runs(t, text="scale conv2")["run_id"]) == ["r2"]
    assert list(R.filter_runs(t, authors=["ana"])["run_id"]) == ["r3", "r1"]
    assert list(R.filter_runs(t, tags=["seed"])["run_id"]) == ["r2", "r1"]
    assert list(R.filter_runs(t, tags=["seed", "edit"])["run_id"]) == ["r2"]
    assert list(R.filter_runs(t, models=["resnet18"], pages=["gradcam"])["run_id"]) == ["r3"]
    assert R.filter_runs(t, text="nothing-matches").empty
    assert len(R.filter_runs(t)) == 3


def test_tags_pages_and_share_links():
    assert R.parse_tags(" a, b,,a ; c ") == ["a", "b", "c"]
    assert R.page_of({"page": "gradcam"}) == "gradcam"
    assert R.page_of({"page": "../evil"}) == "runs" and R.page_of({}) == "runs"
    p = R.share_path("gradcam", "2026-11-26_ab.c")
    assert p.startswith("/gradcam?")
    assert parse_qs(urlparse(p).query) == {"run": ["2026-11-26_ab.c"]}
    assert R.share_url("http://h:8501/", "runs", "r1") == "http://h:8501/runs?run=r1"
    assert R.share_path("", "r1") == "/?run=r1"  # the app's default page lives at the root
    # characters that need escaping are escaped, not injected
    assert parse_qs(urlparse(R.share_path("runs", "a&b=c")).query) == {"run": ["a&b=c"]}


def _events(norms: dict[str, list[float]], role: str = "grad_output") -> pd.DataFrame:
    rows, seq = [], 0
    for layer, vals in norms.items():
        for v in vals:
            rows.append({"seq": seq, "layer": layer, "role": role, "norm": v})
            rows.append({"seq": seq + 1, "layer": layer, "role": "output", "norm": 99.0})
            seq += 2
    return pd.DataFrame(rows)


def test_layer_norms_matches_hand_computation():
    a = _events({"fc2": [2.0], "conv3": [4.0, 6.0], "conv1": [0.0]})
    b = _events({"fc2": [2.0], "conv3": [2.5], "conv1": [1.0], "extra": [3.0]})
    t = R.layer_norms(a, b)
    assert list(t["layer"]) == ["fc2", "conv3", "conv1", "extra"]
    np.testing.assert_allclose(t["a"][:3], [2.0, 5.0, 0.0])  # conv3: mean of two events
    np.testing.assert_allclose(t["b"], [2.0, 2.5, 1.0, 3.0])
    assert t.loc[0, "ratio"] == 1.0 and t.loc[1, "ratio"] == 0.5
    assert math.isnan(t.loc[2, "ratio"]) and math.isnan(t.loc[3, "ratio"])  # A is 0 / absent
    empty = R.layer_norms(pd.DataFrame(columns=["seq", "layer", "role", "norm"]), b)
    assert list(empty["layer"]) == ["fc2", "conv3", "conv1", "extra"] and empty["a"].isna().all()


def test_norm_comparison_and_timeline_figures():
    t = R.layer_norms(_events({"l1": [1.0], "l2": [2.0]}), _events({"l1": [0.5], "l2": [2.0]}))
    fig = R.norm_comparison(t, names=("no edit", "halve"))
    assert [tr.name for tr in fig.data] == ["no edit", "halve", "B / A"]
    np.testing.assert_allclose(np.asarray(fig.data[2].y), [0.5, 1.0])
    assert fig.layout.yaxis.type == "log"
    tl = R.runs_timeline(R.runs_table(_listing()))
    assert isinstance(tl, go.Figure) and sorted(tr.name for tr in tl.data) == ["ana", "bo"]


def test_from_norm_table_picks_one_quantity():
    table = pd.DataFrame({"layer": ["conv", "conv", "fc"], "call": [0, 0, 0],
                          "label": ["conv", "conv", "fc"],
                          "quantity": ["param_grad", "grad_output", "grad_output"],
                          "order": [0.0, 0.0, 1.0], "norm_a": [1.0, 2.0, 4.0],
                          "norm_b": [0.5, 1.0, 4.0], "ratio": [0.5, 0.5, 1.0]})
    t = R.from_norm_table(table, "grad_output")
    assert list(t["layer"]) == ["conv", "fc"]
    np.testing.assert_allclose(t["a"], [2.0, 4.0])
    np.testing.assert_allclose(t["ratio"], [0.5, 1.0])
    assert R.from_norm_table(table.iloc[:0], "grad_output").empty
