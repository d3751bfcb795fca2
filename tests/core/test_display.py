"""Jupyter display (hooklab.core.display): the HTML summary, the plot registry, its errors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import hooklab
from hooklab.charts import trace as trace_charts
from hooklab.core import display
from hooklab.core.display import DisplayError, DisplayMixin
from hooklab.core.trace import Trace
from hooklab.models.zoo import SimpleModel
from tests.conftest import hook_counts


@pytest.fixture(scope="module")
def trace() -> Trace:
    torch.manual_seed(0)
    model = SimpleModel().eval()
    before = hook_counts(model)
    with hooklab.record(model, edits={"conv": hooklab.core.edits.scale(0.5)},
                        param_grads=True) as rec:
        rec.run(torch.randn(1, 1, 4, 4))
    assert hook_counts(model) == before, "a hook was left behind"
    return rec.trace


def _row(html: str, label: str) -> str:
    """The text of the ``<td>`` after the ``<th>`` named ``label``."""
    head = f">{label}</th>"
    assert head in html, f"no row {label!r} in {html}"
    cell = html.split(head, 1)[1]
    return cell.split(">", 1)[1].split("</td>", 1)[0]


def test_summary_counts_what_the_events_hold(trace):
    ev = trace.events
    s = trace.summary()
    assert s["events"] == len(ev)
    assert s["by phase"] == ev.groupby("phase").size().to_dict()
    assert s["by role"] == {str(k): int(v) for k, v in ev.groupby("role").size().items()}
    assert s["model"] == "SimpleModel"
    assert s["edits"] == "conv=scale(0.5)"
    assert s["stored tensors"] == len(trace.tensor_keys()) > 0
    assert str(trace.stored_bytes) in s["stored bytes"]
    assert s["truncated"] is False


def test_html_shows_the_counts(trace):
    html = trace._repr_html_()
    ev = trace.events
    assert _row(html, "events") == str(len(ev))
    n_back = int((ev["phase"] == "backward").sum())
    assert f"backward {n_back}" in _row(html, "by phase")
    assert _row(html, "edits") == "conv=scale(0.5)"
    assert _row(html, "truncated") == "no"


def test_html_escapes_a_hostile_model_name():
    evil = "<script>alert('x')</script>"
    tr = Trace(meta={"model": evil, "layers": ["<b>l</b>"], "truncated": True})
    html = tr._repr_html_()
    assert "<script>" not in html and "<b>l</b>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert _row(html, "events") == "0"
    assert _row(html, "truncated").startswith("yes")


def test_plot_is_the_dashboards_figure(trace):
    # the Inspector draws charts.trace.timeline(trace.events, title=...)
    assert trace.plot().to_json() == trace_charts.timeline(trace.events).to_json()
    assert (trace.plot("timeline", title="T", height=300).to_json()
            == trace_charts.timeline(trace.events, title="T", height=300).to_json())


def test_show_displays_the_plot(trace, monkeypatch):
    shown = []
    monkeypatch.setattr("plotly.graph_objects.Figure.show", lambda fig: shown.append(fig))
    assert trace.show() is None
    assert len(shown) == 1 and shown[0].to_json() == trace.plot().to_json()


def test_unknown_kind_lists_the_known_ones(trace):
    with pytest.raises(DisplayError, match="unknown plot kind 'nope' for Trace; known: "
                                           "timeline, channels, histogram, pair"):
        trace.plot("nope")
    assert display.plot_kinds(trace)[0] == "timeline"
    assert display.plot_kinds(Trace) == display.plot_kinds(trace)


class Unplotted(DisplayMixin):
    """A class nobody registered."""

    def __repr__(self) -> str:
        return "Unplotted<&>"


def test_an_unregistered_class_gives_one_clear_error():
    obj = Unplotted()
    with pytest.raises(DisplayError, match="no plots are registered for Unplotted; "
                                           "`import hooklab` registers them"):
        obj.plot()
    assert isinstance(DisplayError("x"), hooklab.HooklabError)
    assert display.plot_kinds(obj) == []
    # no summariser either: the repr, escaped
    assert obj.summary() == {"object": "Unplotted<&>"}
    assert "Unplotted&lt;&amp;&gt;" in obj._repr_html_()


class Registered(DisplayMixin):
    """A class registered by the test (names are the registry's keys)."""

    def __init__(self, n: int) -> None:
        self.n = n


class SubRegistered(Registered):
    """Inherits its parent's registrations through the MRO."""


def test_registry_default_kind_kwargs_and_subclasses():
    display.register_plotter("Registered", "first", lambda o, **kw: ("first", o.n, kw))
    display.register_plotter("Registered", "second", lambda o, **kw: ("second", o.n, kw))
    display.register_summary("Registered", lambda o: {"n": o.n, "tags": list(range(12))})
    obj = Registered(3)
    assert obj.plot() == ("first", 3, {})  # the first registered is the default
    assert obj.plot("second", a=1) == ("second", 3, {"a": 1})
    display.register_plotter("Registered", "second", lambda o, **kw: ("second!", o.n, kw),
                             default=True)
    assert obj.plot() == ("second!", 3, {})
    assert SubRegistered(4).plot("first") == ("first", 4, {})
    html = SubRegistered(5)._repr_html_()
    assert "hooklab SubRegistered" in html and _row(html, "n") == "5"
    assert _row(html, "tags") == "0, 1, 2, 3, 4, 5, 6, 7 … and 4 more"
    with pytest.raises(ValueError, match="non-empty string"):
        display.register_plotter("Registered", "", lambda o: None)


def test_summary_of_a_stored_trace_matches_the_recorded_one(trace, tmp_path):
    store = hooklab.TraceStore(tmp_path)
    loaded = store.load(store.save(trace, author="t"))
    ours, theirs = trace.summary(), loaded.summary()
    for key in ("events", "by phase", "by role", "edits", "stored tensors", "truncated"):
        assert ours[key] == theirs[key], key
    pd.testing.assert_frame_equal(loaded.events, trace.events)


def test_stored_bytes_are_readable():
    assert Trace(meta={"stored_bytes": 784}).summary()["stored bytes"] == "784 bytes"
    assert Trace(meta={"stored_bytes": 2504}).summary()["stored bytes"] == "2.4 KiB (2504 bytes)"
    big = 3 * 2**30 + 2**29
    assert Trace(meta={"stored_bytes": big}).summary()["stored bytes"] == f"3.5 GiB ({big} bytes)"
