"""Run lists for the Runs page: display table, filter/search, share links, a two-run comparison.

Pure functions over the store's listing (``TraceStore.list()``: one row per run) and over
events tables; no store access, no Streamlit.

Example:
    >>> shown = filter_runs(runs_table(store.list()), text="halve", authors=["ana"])
    >>> share_path("gradcam", "20261126-ab12")      # '/gradcam?run=20261126-ab12'
    >>> fig = norm_comparison(layer_norms(trace_a.events, trace_b.events))
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hooklab.charts.common import plain_text
from hooklab.core.edits import describe

#: Columns of :func:`runs_table`, in display order.
TABLE_COLUMNS: tuple[str, ...] = ("run_id", "created", "author", "page", "model", "edits",
                                  "tags", "notes", "n_events", "status")

#: Pages a run can be opened in (their URL paths); anything else opens on the Runs page.
PAGES: tuple[str, ...] = ("hook_basics", "inspector", "compare", "gradcam", "runs", "training")


def _meta(row: Mapping[str, Any]) -> dict[str, Any]:
    m = row.get("meta")
    if isinstance(m, str):
        try:
            m = json.loads(m)
        except ValueError:
            m = {}
    return m if isinstance(m, dict) else {}


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (list, tuple, np.ndarray)):
        return ", ".join(_text(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    return str(v)


def edits_text(edits: Any) -> str:
    """A run's edits as text, ``"conv2=scale(0.5)"``; ``""`` when none.

    The same text everywhere: :func:`hooklab.core.edits.describe` (a missing value, NaN in a
    listing, is no edit).
    """
    if isinstance(edits, float) and math.isnan(edits):
        return ""
    return describe(edits)


def runs_table(listing: pd.DataFrame) -> pd.DataFrame:
    """The store listing as a display table with :data:`TABLE_COLUMNS`, newest first.

    Missing columns are derived from the run's ``meta`` (``page``, ``model``, ``edits``) or left
    empty, so listings from older runs still display. ``tags`` is kept as a list; ``created`` is a
    timezone-aware timestamp where parseable.
    """
    rows = []
    for rec in (listing.to_dict("records") if listing is not None else []):
        meta = _meta(rec)
        model = rec.get("model") or meta.get("model") or meta.get("model_name") or ""
        edits = rec.get("edits") if "edits" in rec else meta.get("edits")
        tags = rec.get("tags")
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        elif tags is None or (isinstance(tags, float) and math.isnan(tags)):
            tags = []
        rows.append({
            "run_id": _text(rec.get("run_id")),
            "created": rec.get("created", ""),
            "author": _text(rec.get("author")),
            "page": _text(rec.get("page") or meta.get("page") or meta.get("kind") or ""),
            "model": _text(model),
            "edits": edits_text(edits),
            "tags": [str(t) for t in tags],
            "notes": _text(rec.get("notes")),
            "n_events": int(rec.get("n_events") or 0),
            "status": _text(rec.get("status")) or "ok",
        })
    df = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    if len(df):
        df["created"] = pd.to_datetime(df["created"], errors="coerce", utc=True, format="mixed")
        df = df.sort_values("created", ascending=False, na_position="last", kind="stable")
    return df.reset_index(drop=True)


def filter_runs(table: pd.DataFrame, text: str = "", authors: Iterable[str] = (),
                models: Iterable[str] = (), pages: Iterable[str] = (),
                tags: Iterable[str] = ()) -> pd.DataFrame:
    """Rows of a :func:`runs_table` matching every given filter.

    ``text``: each whitespace-separated word must occur (case-insensitive) in the run id,
    author, page, model, edits, tags or notes. ``authors``/``models``/``pages``: the value is one
    of them (empty = any). ``tags``: the run carries all of them.
    """
    if table.empty:
        return table
    mask = pd.Series(True, index=table.index)
    hay = (table["run_id"] + " " + table["author"] + " " + table["page"] + " " + table["model"]
           + " " + table["edits"] + " " + table["tags"].map(" ".join) + " "
           + table["notes"]).str.lower()
    for word in text.lower().split():
        mask &= hay.str.contains(word, regex=False)
    for col, wanted in (("author", authors), ("model", models), ("page", pages)):
        wanted = list(wanted)
        if wanted:
            mask &= table[col].isin(wanted)
    need = set(tags)
    if need:
        mask &= table["tags"].map(lambda ts: need.issubset(ts))
    return table[mask].reset_index(drop=True)


def parse_tags(text: str) -> list[str]:
    """``"a, b,,  c"`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    return list(dict.fromkeys(t.strip() for t in text.replace(";", ",").split(",") if t.strip()))


def page_of(meta: Mapping[str, Any]) -> str:
    """The URL path of the page that made a run (``meta["page"]``), else ``"runs"``."""
    page = str(meta.get("page", "") or "")
    return page if page in PAGES else "runs"


def share_path(page: str, run_id: str) -> str:
    """Relative share link that opens ``run_id`` on ``page``: ``/<page>?run=<id>``."""
    return f"/{quote(page)}?{urlencode({'run': run_id})}"


def share_url(base: str, page: str, run_id: str) -> str:
    """Absolute share link (``base`` like ``http://host:8501``, trailing slash optional)."""
    return base.rstrip("/") + share_path(page, run_id)


def layer_norms(events_a: pd.DataFrame, events_b: pd.DataFrame, role: str = "grad_output",
                stat: str = "norm") -> pd.DataFrame:
    """Per-layer ``stat`` of ``role`` events in two runs, side by side, with the ratio B / A.

    Several events per layer (several steps or calls) are averaged. Layers keep run A's firing
    order, then B-only layers. Columns: ``layer, a, b, ratio`` (ratio NaN where A is 0 or absent).
    """
    def per_layer(ev: pd.DataFrame) -> pd.Series:
        sel = ev[ev["role"] == role] if len(ev) else ev
        if sel.empty:
            return pd.Series(dtype="float64")
        order = sel.groupby("layer", sort=False)["seq"].min().sort_values()
        return sel.groupby("layer", sort=False)[stat].mean().reindex(order.index)

    a, b = per_layer(events_a), per_layer(events_b)
    layers = list(a.index) + [x for x in b.index if x not in a.index]
    out = pd.DataFrame({"layer": layers,
                        "a": [float(a.get(x, np.nan)) for x in layers],
                        "b": [float(b.get(x, np.nan)) for x in layers]})
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = out["b"].to_numpy() / out["a"].to_numpy()
    ratio[~np.isfinite(ratio)] = np.nan
    out["ratio"] = ratio
    return out


def from_norm_table(table: pd.DataFrame, quantity: str = "grad_output") -> pd.DataFrame:
    """:func:`hooklab.studies.compare.norm_table` rows of one ``quantity`` in :func:`layer_norms` form
    (``layer, a, b, ratio``; ``layer`` is the table's label, e.g. ``"conv (call 1)"``)."""
    sel = table[table["quantity"] == quantity] if len(table) else table
    return pd.DataFrame({"layer": list(sel.get("label", sel.get("layer", []))),
                         "a": np.asarray(sel.get("norm_a", []), dtype=float),
                         "b": np.asarray(sel.get("norm_b", []), dtype=float),
                         "ratio": np.asarray(sel.get("ratio", []), dtype=float)})


def norm_comparison(table: pd.DataFrame, names: Sequence[str] = ("A", "B"),
                    y_title: str = "gradient norm", ratio_title: str = "B / A",
                    height: int = 360) -> go.Figure:
    """Grouped bars of run A's and B's per-layer values (log axis) and the ratio as a line on a
    second axis; ``table`` is :func:`layer_norms` output."""
    fig = go.Figure()
    x = [plain_text(v) for v in table["layer"]]  # layer names from two runs: text
    names = [plain_text(v) for v in names]
    fig.add_trace(go.Bar(name=names[0], x=x, y=table["a"].to_numpy(np.float32),
                         marker_color="#2471a3"))
    fig.add_trace(go.Bar(name=names[1], x=x, y=table["b"].to_numpy(np.float32),
                         marker_color="#c0392b"))
    fig.add_trace(go.Scatter(name=ratio_title, x=x, y=table["ratio"].to_numpy(np.float32),
                             mode="lines+markers", yaxis="y2", line=dict(color="#333")))
    positive = table[["a", "b"]].to_numpy()
    log = bool(np.nanmin(positive, initial=np.inf) > 0) if positive.size else False
    fig.update_layout(
        barmode="group", height=height, margin=dict(l=10, r=10, t=30, b=10),
        yaxis=dict(title=y_title, type="log" if log else "linear"),
        yaxis2=dict(title=ratio_title, overlaying="y", side="right", showgrid=False),
        legend=dict(orientation="h", y=1.12))
    return fig


def runs_timeline(table: pd.DataFrame, height: int = 260) -> go.Figure:
    """Runs over time, one marker per run, one colour per author; hover shows id, page, notes."""
    fig = go.Figure()
    for author, grp in table.groupby("author", sort=True):  # a run's text as text: plain_text
        fig.add_trace(go.Scatter(
            x=grp["created"], y=grp["page"].replace("", "?").map(plain_text), mode="markers",
            name=plain_text(author) or "?", marker=dict(size=11),
            customdata=np.stack([grp["run_id"].map(plain_text), grp["notes"].map(plain_text)],
                                axis=1),
            hovertemplate="%{customdata[0]}<br>%{y}<br>%{customdata[1]}<extra>%{fullData.name}"
                          "</extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", y=1.15))
    return fig
