"""What ``Trace.plot()`` and ``WatchRun.plot()`` draw: the dashboard's own figures, registered.

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

``WatchRun.plot(kind)`` (a :func:`hooklab.watch` run, :func:`hooklab.store.stream.open_watch`),
the Training page's figures (:mod:`hooklab.charts.training`), kinds:

- ``"heatmap"`` (default): :func:`~hooklab.charts.training.grad_norm_heatmap`, layer x step,
  log colour; ``role="grad_output"`` (default), ``"param_grad"`` or ``"output"``.
- ``"scalars"``: :func:`~hooklab.charts.training.scalar_curves` (loss, accuracy, ...).
- ``"update_ratio"``: :func:`~hooklab.charts.training.update_ratio_lines` (‖Δw‖/‖w‖).
- ``"dead"``: :func:`~hooklab.charts.training.dead_fraction_heatmap`.
- ``"ratio"``: :func:`~hooklab.charts.training.ratio_heatmap` of this run over
  ``baseline=<another WatchRun>`` (per layer and step; 0.5 where an edit halved a gradient).

``WatchRun``'s HTML summary: run id, status, model, steps recorded and trained, the last value of
each logged scalar, edits, the first NaN/Inf.

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
from hooklab.charts import training as training_charts
from hooklab.core.display import events_summary, register_plotter, register_summary
from hooklab.core.trace import Trace
from hooklab.store.stream import WatchRun
from hooklab.studies.inspect import partner
from hooklab.studies.training_views import first_nonfinite, last_scalars

__all__ = ["pick_event", "trace_channels", "trace_histogram", "trace_pair", "trace_timeline",
           "watch_dead", "watch_heatmap", "watch_ratio", "watch_scalars", "watch_summary",
           "watch_update_ratio"]

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


# -- watch runs ----------------------------------------------------------------------------------
def watch_heatmap(run: WatchRun, role: str = "grad_output", **kwargs: Any) -> go.Figure:
    """:func:`hooklab.charts.training.grad_norm_heatmap` of the run's events."""
    return training_charts.grad_norm_heatmap(run.events, role, **kwargs)


def watch_scalars(run: WatchRun, **kwargs: Any) -> go.Figure:
    """:func:`hooklab.charts.training.scalar_curves` of the run's scalars."""
    return training_charts.scalar_curves(run.scalars, **kwargs)


def watch_update_ratio(run: WatchRun, **kwargs: Any) -> go.Figure:
    """:func:`hooklab.charts.training.update_ratio_lines` of the run's scalars."""
    return training_charts.update_ratio_lines(run.scalars, **kwargs)


def watch_dead(run: WatchRun, **kwargs: Any) -> go.Figure:
    """:func:`hooklab.charts.training.dead_fraction_heatmap` of the run's scalars."""
    return training_charts.dead_fraction_heatmap(run.scalars, **kwargs)


def watch_ratio(run: WatchRun, baseline: WatchRun, role: str = "grad_output",
                **kwargs: Any) -> go.Figure:
    """:func:`hooklab.charts.training.ratio_heatmap`: this run's norms over ``baseline``'s."""
    kwargs.setdefault("names", (baseline.run_id, run.run_id))
    return training_charts.ratio_heatmap(baseline.events, run.events, role, **kwargs)


def watch_summary(run: WatchRun) -> dict[str, Any]:
    """The HTML summary of a watch run (see the module docstring)."""
    base = events_summary(run.events, run.meta)
    steps = run.steps
    full = {"nan_count", "inf_count", "step", "layer", "role"} <= set(run.events.columns)
    bad = first_nonfinite(run.events) if full else None
    status = run.status + (f": {run.error}" if run.error else "")
    return {
        "run": run.run_id,
        "status": status,
        "model": base["model"],
        "layers": base["layers"],
        "steps recorded": (f"{len(steps)} ({steps[0]}..{steps[-1]}, every "
                           f"{run.meta.get('every', '?')}) of {run.steps_done} trained"
                           if steps else f"none of {run.steps_done} trained"),
        "segments": run.segments,
        "events": base["events"],
        "by role": base.get("by role", "—"),
        "last scalars": {name: f"{value:.4g} (step {step})"
                         for name, (step, value) in last_scalars(run.scalars).items()},
        "edits": base["edits"],
        "first NaN/Inf": bad.text() if bad is not None else "none" if full else "—",
        "author": run.manifest.get("author") or "—",
        "tags": list(run.manifest.get("tags", [])),
    }


register_summary("WatchRun", watch_summary)
register_plotter("WatchRun", "heatmap", watch_heatmap, default=True)
register_plotter("WatchRun", "scalars", watch_scalars)
register_plotter("WatchRun", "update_ratio", watch_update_ratio)
register_plotter("WatchRun", "dead", watch_dead)
register_plotter("WatchRun", "ratio", watch_ratio)
register_plotter("Trace", "timeline", trace_timeline, default=True)
register_plotter("Trace", "channels", trace_channels)
register_plotter("Trace", "histogram", trace_histogram)
register_plotter("Trace", "pair", trace_pair)
