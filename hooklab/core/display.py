"""Jupyter display of hooklab objects: an HTML summary, and ``plot()`` through a registry.

The core layer may not import the charts layer, so figures are found through a small registry
keyed by class name. A class that inherits :class:`DisplayMixin` gets

- ``_repr_html_()``: Jupyter's rich display, a short table built from :meth:`DisplayMixin.summary`
  (every value escaped with :func:`html.escape`);
- ``plot(kind=None, **kwargs)``: the Plotly figure of the plotter registered for its class and
  ``kind`` (the class's default kind when ``None``), the same figure the dashboard draws;
- ``show(kind=None, **kwargs)``: ``plot(...).show()``.

:mod:`hooklab.charts.notebook` registers the plotters (``import hooklab`` imports it); the
summary of a :class:`~hooklab.core.trace.Trace` is registered here (it needs no charts).

Example:
    >>> register_plotter("Trace", "timeline", lambda tr, **kw: timeline(tr.events, **kw),
    ...                  default=True)
    >>> trace.plot().layout.title.text          # the timeline, as on the Inspector page
    'Hook firings'
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hooklab.core.edits import describe
from hooklab.core.errors import HooklabError

__all__ = ["DisplayError", "DisplayMixin", "Plotter", "Summariser", "events_summary",
           "plot_kinds", "register_plotter", "register_summary", "summary_html",
           "trace_summary"]

#: ``plotter(obj, **kwargs) -> go.Figure``.
Plotter = Callable[..., Any]
#: ``summariser(obj) -> {label: value}`` (values: text, numbers, mappings of counts, lists).
Summariser = Callable[[Any], dict[str, Any]]

_PLOTTERS: dict[str, dict[str, Plotter]] = {}
_DEFAULT_KIND: dict[str, str] = {}
_SUMMARIES: dict[str, Summariser] = {}

#: Names listed in a summary before "… and N more".
MAX_LISTED = 8


class DisplayError(HooklabError, LookupError):
    """No plot is registered for an object's class, or the plot kind is unknown."""


def register_plotter(class_name: str, kind: str, plotter: Plotter, *,
                     default: bool = False) -> Plotter:
    """Register ``plotter`` as ``plot(kind)`` of the class named ``class_name``.

    The first kind registered for a class is its default until one is registered with
    ``default=True``. Registering a kind again replaces it. Returns ``plotter`` (so it can be
    used as a decorator body).
    """
    if not kind or not isinstance(kind, str):
        raise ValueError(f"a plot kind must be a non-empty string, got {kind!r}")
    _PLOTTERS.setdefault(class_name, {})[kind] = plotter
    if default or class_name not in _DEFAULT_KIND:
        _DEFAULT_KIND[class_name] = kind
    return plotter


def register_summary(class_name: str, summariser: Summariser) -> Summariser:
    """Register the function that builds ``summary()`` of the class named ``class_name``."""
    _SUMMARIES[class_name] = summariser
    return summariser


def _registered_name(cls: type, table: Mapping[str, Any]) -> str | None:
    """The first class name in ``cls``'s MRO with an entry in ``table`` (subclasses inherit)."""
    return next((c.__name__ for c in cls.__mro__ if c.__name__ in table), None)


def plot_kinds(obj_or_cls: Any) -> list[str]:
    """The plot kinds registered for an object (or class), the default first."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    name = _registered_name(cls, _PLOTTERS)
    if name is None:
        return []
    default = _DEFAULT_KIND[name]
    return [default, *(k for k in _PLOTTERS[name] if k != default)]


def _format(value: Any) -> str:
    """One summary value as text: mappings as ``"k v · k v"``, lists shortened."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return " · ".join(f"{k} {v}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
        more = len(items) - MAX_LISTED
        text = ", ".join(items[:MAX_LISTED]) or "—"
        return text + (f" … and {more} more" if more > 0 else "")
    return str(value)


def summary_html(title: str, summary: Mapping[str, Any]) -> str:
    """A small HTML table: ``title`` as caption, one row per summary entry, all escaped."""
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(_format(v))}</td></tr>"
        for k, v in summary.items())
    return (f"<div class='hooklab-summary'><table>"
            f"<caption style='text-align:left;font-weight:bold'>{html.escape(title)}</caption>"
            f"{rows}</table></div>")


def _human_bytes(n: int) -> str:
    """``2504`` -> ``"2.4 KiB (2504 bytes)"``; under 1 KiB just ``"784 bytes"``."""
    if n < 1024:
        return f"{n} bytes"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit} ({n} bytes)"


def _counts(values: Iterable[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def events_summary(events: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of an events table (:data:`hooklab.core.trace.EVENT_COLUMNS`) and its meta.

    Entries: model, layers, events (total), by phase, by role, steps, edits, NaN/Inf events;
    an entry whose columns the table lacks (a run opened with a subset of columns) is left out.
    """
    cols = set(events.columns)
    layers = list(meta.get("layers", []))
    out: dict[str, Any] = {
        "model": meta.get("model", "?"),
        "layers": f"{len(layers)}: {_format(layers)}" if layers else "—",
        "events": len(events),
    }
    for col in ("phase", "role"):
        if col in cols:
            out[f"by {col}"] = _counts(events[col])
    if "step" in cols:
        steps = sorted({int(s) for s in events["step"]})
        out["steps"] = (f"{len(steps)} ({steps[0]}..{steps[-1]})" if len(steps) > 1
                        else str(steps[0]) if steps else "—")
    out["edits"] = describe(meta.get("edits") or []) or "none"
    if {"nan_count", "inf_count"} <= cols:
        out["events with NaN/Inf"] = int(((events["nan_count"] > 0)
                                          | (events["inf_count"] > 0)).sum())
    return out


def trace_summary(trace: Any) -> dict[str, Any]:
    """The summary of a :class:`~hooklab.core.trace.Trace`: :func:`events_summary`, then the
    stored tensors and bytes and whether the byte budget ran out (``truncated``)."""
    out = events_summary(trace.events, trace.meta)
    out["stored tensors"] = len(trace.tensor_keys())
    out["stored bytes"] = _human_bytes(trace.stored_bytes)
    out["truncated"] = (("yes: the byte budget ran out, later events kept statistics only")
                        if trace.truncated else False)
    return out


register_summary("Trace", trace_summary)


class DisplayMixin:
    """Jupyter display for a hooklab class: ``_repr_html_``, ``summary``, ``plot``, ``show``.

    The summary and the plots are looked up by class name (see :func:`register_summary`,
    :func:`register_plotter`), so a core class can plot with figures of the charts layer.
    """

    def summary(self) -> dict[str, Any]:
        """``{label: value}`` describing this object (what ``_repr_html_`` shows)."""
        name = _registered_name(type(self), _SUMMARIES)
        if name is None:
            return {"object": repr(self)}
        return _SUMMARIES[name](self)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the summary as a small HTML table."""
        return summary_html(f"hooklab {type(self).__name__}", self.summary())

    def plot(self, kind: str | None = None, **kwargs: Any) -> Any:
        """The figure of plot ``kind`` (the default kind when ``None``).

        Raises:
            DisplayError: no plot registered for this class, or an unknown ``kind``.
        """
        cls = type(self).__name__
        name = _registered_name(type(self), _PLOTTERS)
        if name is None:
            raise DisplayError(
                f"no plots are registered for {cls}; `import hooklab` registers them "
                f"(hooklab.charts.notebook)")
        kind = _DEFAULT_KIND[name] if kind is None else kind
        try:
            plotter = _PLOTTERS[name][kind]
        except KeyError:
            raise DisplayError(f"unknown plot kind {kind!r} for {cls}; known: "
                               f"{', '.join(plot_kinds(self))}") from None
        return plotter(self, **kwargs)

    def show(self, kind: str | None = None, **kwargs: Any) -> None:
        """Display ``plot(kind, **kwargs)`` (Plotly's ``Figure.show``: inline in Jupyter)."""
        self.plot(kind, **kwargs).show()
