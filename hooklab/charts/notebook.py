"""The plots behind ``Trace.plot()`` in a notebook: the dashboard's own figures, registered.

:class:`hooklab.core.display.DisplayMixin` looks plotters up by class name; this module
registers them (``import hooklab`` imports it). Each plotter returns exactly what the chart
function returns when called directly, so a notebook and the dashboard draw the same figure.

``Trace.plot(kind)``, kinds:

- ``"timeline"`` (default): :func:`hooklab.charts.trace.timeline` of the events (the Inspector's
  timeline); keyword arguments go to it (``title``, ``height``).
- ``"channels"``: :func:`~hooklab.charts.trace.channel_maps` of one stored tensor, titled with
  its :func:`~hooklab.charts.trace.event_label` (as the Inspector's event view).
- ``"histogram"``: :func:`~hooklab.charts.trace.histogram` of one stored tensor, titled with
  its role.
- ``"pair"``: :func:`~hooklab.charts.trace.tensor_pair` of a layer's activation and gradient
  (the value before an edit, as the Inspector shows).

The tensor kinds pick the first event (firing order) with a stored tensor that matches the
keyword filters ``layer``, ``role`` (default ``"output"``), ``step``, ``call``, ``index``.

Example:
    >>> with hooklab.record(model, layers="conv1") as rec:
    ...     rec.run(x)
    >>> rec.trace.plot()                                   # timeline
    >>> rec.trace.plot("channels", layer="conv1")          # conv1's output maps
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from hooklab.charts import trace as trace_charts
from hooklab.core.display import register_plotter
from hooklab.core.trace import Trace
from hooklab.studies.inspect import partner

__all__ = ["pick_event", "trace_channels", "trace_histogram", "trace_pair", "trace_timeline"]

#: Event columns a tensor plot may filter on.
FILTERS = ("layer", "role", "step", "call", "index")


def pick_event(trace: Trace, **where: Any) -> pd.Series:
    """The first event (firing order) with a stored tensor whose columns equal ``where``.

    Raises:
        KeyError: no event matches, or none of the matches kept its tensor (with a hint).
    """
    unknown = sorted(set(where) - set(FILTERS))
    if unknown:
        raise TypeError(f"unknown event filter(s) {unknown}; use {', '.join(FILTERS)}")
    rows = trace.select(**where)
    if rows.empty:
        layers = ", ".join(dict.fromkeys(trace.events["layer"].replace("", "(model)")))
        raise KeyError(f"no event matches {where}; layers in this trace: {layers or 'none'}")
    stored = rows[rows["key"] != ""]
    if stored.empty:
        raise KeyError(f"the events matching {where} kept statistics only (no tensor stored; "
                       f"record with keep_tensors=True)")
    return stored.sort_values("seq").iloc[0]


def trace_timeline(trace: Trace, **kwargs: Any) -> go.Figure:
    """:func:`hooklab.charts.trace.timeline` of the trace's events."""
    return trace_charts.timeline(trace.events, **kwargs)


def trace_channels(trace: Trace, *, layer: str, role: str = "output", **where: Any) -> go.Figure:
    """:func:`hooklab.charts.trace.channel_maps` of ``layer``'s stored ``role`` tensor."""
    row = pick_event(trace, layer=layer, role=role, **where)
    return trace_charts.channel_maps(trace.tensor(row["key"]), title=trace_charts.event_label(row))


def trace_histogram(trace: Trace, *, layer: str, role: str = "output",
                    **where: Any) -> go.Figure:
    """:func:`hooklab.charts.trace.histogram` of ``layer``'s stored ``role`` tensor."""
    row = pick_event(trace, layer=layer, role=role, **where)
    return trace_charts.histogram(trace.tensor(row["key"]), title=str(row["role"]))


def trace_pair(trace: Trace, *, layer: str, channel: int | None = None,
               **where: Any) -> go.Figure:
    """:func:`hooklab.charts.trace.tensor_pair`: ``layer``'s output and its gradient."""
    row = pick_event(trace, layer=layer, **where)
    return trace_charts.tensor_pair(partner(trace, row, "output"),
                                    partner(trace, row, "grad_output"), channel=channel)


register_plotter("Trace", "timeline", trace_timeline, default=True)
register_plotter("Trace", "channels", trace_channels)
register_plotter("Trace", "histogram", trace_histogram)
register_plotter("Trace", "pair", trace_pair)
