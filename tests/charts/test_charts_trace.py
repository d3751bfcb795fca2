"""Trace figures: timeline, event tables and tensor views, on a real recording."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import hooklab
from hooklab.charts import trace as T
from hooklab.charts.common import MAX_VALUES
from hooklab.models.zoo import SimpleModel
from tests.conftest import hook_counts


@pytest.fixture(scope="module")
def trace():
    torch.manual_seed(0)
    model = SimpleModel().eval()
    x = torch.randn(2, 1, 4, 4)
    before = hook_counts(model)
    with hooklab.record(model, edits={"conv": hooklab.core.edits.scale(0.5)},
                        param_grads=True) as rec:
        rec.run(x)
    assert hook_counts(model) == before
    return rec.trace


def test_timeline_covers_every_event(trace):
    ev = trace.events
    fig = T.timeline(ev)
    markers = [d for d in fig.data if d.name != "NaN/Inf"]
    assert sum(len(d.x) for d in markers) == len(ev)
    assert {d.name for d in markers} == set(ev["kind"])
    xs = np.concatenate([d.x for d in markers])
    assert xs.dtype == np.float32 and sorted(xs.tolist()) == ev["seq"].astype(float).tolist()
    # layers in forward order, first layer at the top
    assert list(fig.layout.yaxis.categoryarray)[::-1] == ["conv", "relu", "fc"]
    # forward and backward phases both shaded, with a separator
    assert len([s for s in fig.layout.shapes if s.type == "rect"]) == 2
    assert any(s.type == "line" for s in fig.layout.shapes)


def test_timeline_empty_and_nonfinite():
    from hooklab.core.trace import empty_events

    assert "no events" in T.timeline(empty_events()).layout.title.text
    ev = pd.DataFrame([{"seq": 0, "step": 0, "phase": "forward", "kind": "forward",
                        "layer": "a", "call": 0, "role": "output", "index": "0", "edit": "",
                        "shape": "2", "nan_count": 1, "inf_count": 0}])
    fig = T.timeline(ev)
    assert any(d.name == "NaN/Inf" for d in fig.data)


def test_event_table_and_summary(trace):
    ev = trace.events
    table = T.event_table(ev)
    assert len(table) == len(ev) and "flag" in table and (table["flag"] == "").all()
    s = T.event_summary(ev)
    conv_pg = ev[(ev["layer"] == "conv") & (ev["role"] == "param_grad")]
    row = s[(s["layer"] == "conv") & (s["role"] == "param_grad")].iloc[0]
    assert row["events"] == 2
    assert row["norm"] == pytest.approx(float(np.sqrt((conv_pg["norm"] ** 2).sum())))
    assert "conv" in T.event_label(ev.iloc[1])


def test_channel_maps_facets_and_tiles():
    t = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    fig = T.channel_maps(t, "a")
    assert len(fig.data) == 3
    np.testing.assert_array_equal(fig.data[2].z, t[0, 2].numpy())
    big = torch.rand(1, 100, 8, 8)
    fig = T.channel_maps(big, "b")
    assert len(fig.data) == 1 and "tiled" in fig.layout.title.text
    z = fig.data[0].z
    assert z.shape == (10 * 9 - 1, 10 * 9 - 1)
    np.testing.assert_array_equal(z[9:17, 18:26], big[0, 12].numpy())  # channel 12: row 1, col 2


def test_never_more_than_a_million_values():
    t = torch.rand(1, 1, 3000, 3000)
    fig = T.channel_maps(t, "huge")
    assert fig.data[0].z.size <= MAX_VALUES and "downsampled" in fig.layout.title.text
    fig = T.tensor_pair(t, t)
    assert sum(np.asarray(d.z).size for d in fig.data if d.type == "heatmap") <= MAX_VALUES
    assert "downsampled" in fig.layout.title.text
    fig = T.histogram(t)
    assert len(fig.data[0].x) == 60


def test_nonfinite_flagged():
    t = torch.ones(1, 2, 4, 4)
    t[0, 0, 0, 0] = float("nan")
    t[0, 1, 1, 1] = float("inf")
    fig = T.channel_maps(t, "bad")
    flags = [a.text for a in fig.layout.annotations if "NaN" in a.text]
    assert flags and "1 NaN" in flags[0] and "1 Inf" in flags[0]
    assert np.isnan(fig.data[1].z[1, 1])  # Inf shown blank
    stats = dict(T.stats_table(t).values.tolist())
    assert stats["nan_count"] == "1" and stats["inf_count"] == "1"


def test_tensor_pair_activation_and_gradient(trace):
    act = trace.find(layer="conv", role="output")
    grad = trace.find(layer="conv", role="grad_output")
    fig = T.tensor_pair(act, grad, channel=1)
    heat = [d for d in fig.data if d.type == "heatmap"]
    np.testing.assert_array_equal(heat[0].z, act[0, 1].numpy())
    np.testing.assert_array_equal(heat[1].z, grad[0, 1].numpy())
    fig = T.tensor_pair(act, None)
    assert "not recorded" in fig.layout.annotations[1].text


def test_timeline_shows_layer_names_as_text(trace):
    """Layer names of a shared run are text on the axis: no tag of theirs reaches Plotly."""
    ev = trace.events.copy()
    ev["layer"] = ev["layer"].replace({"conv": '<a href="https://x.test">c</a>', "fc": "f<b>"})
    fig = T.timeline(ev)
    order = list(fig.layout.yaxis.categoryarray)[::-1]
    assert order == ['&lt;a href="https://x.test"&gt;c&lt;/a&gt;', "relu", "f&lt;b&gt;"]
    ys = {y for d in fig.data for y in d.y}
    assert ys == set(order)
