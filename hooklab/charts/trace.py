"""Figures and table data for a recorded trace: timeline, event table, tensor views.

Inputs are a trace's events table (:data:`hooklab.core.trace.EVENT_COLUMNS`) and stored tensors.

Example:
    >>> fig = timeline(trace.events)               # x = firing order, y = layer, colour = kind
    >>> rows = event_table(trace.events)           # display table with statistics
    >>> fig = tensor_pair(trace.tensor(a_key), trace.tensor(g_key))   # activation | gradient
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from hooklab.charts.common import (
    KIND_COLORS,
    MAX_FACETS,
    MAX_VALUES,
    add_flag,
    base_layout,
    budget_note,
    downsample1d,
    downsample2d,
    finite,
    flag_text,
    grid,
    heatmap,
    image_axes,
    nonfinite_counts,
    plain_text,
    robust_signed_range,
    to_f32,
)
from hooklab.core.trace import tensor_stats

#: Marker symbol per event role in the timeline.
ROLE_SYMBOLS: dict[str, str] = {
    "input": "circle-open", "output": "circle", "grad_output": "diamond",
    "grad_input": "diamond-open", "param_grad": "square", "edited": "star",
}

#: Columns of :func:`event_table`, in display order.
TABLE_COLUMNS: tuple[str, ...] = (
    "seq", "step", "phase", "kind", "layer", "call", "role", "index", "edit", "shape", "mean",
    "std", "min", "max", "norm", "zero_frac", "nan_count", "inf_count",
)


# ----------------------------------------------------------------------------------------------
# Timeline and tables
# ----------------------------------------------------------------------------------------------
def layer_order(events: pd.DataFrame) -> list[str]:
    """Layers in order of first appearance (the forward order)."""
    names = events["layer"].replace("", "(model)")
    return list(dict.fromkeys(names.tolist()))


def timeline(events: pd.DataFrame, title: str = "Hook firings",
             height: int | None = None) -> go.Figure:
    """Every hook firing as a marker: x = sequence number, y = layer, colour = hook kind.

    Forward and backward phases are shaded differently and separated by a dashed line; the
    marker symbol shows the role (input, output, grad_output, param_grad, edited...). Events with
    NaN/Inf are ringed in red.
    """
    if events.empty:
        return base_layout(go.Figure(), title + " (no events)", height or 240)
    ev = events.copy()
    # a run's layer names, shown as text (not HTML) on the axis and in the hover
    ev["layer"] = ev["layer"].replace("", "(model)").map(plain_text)
    order = [plain_text(n) for n in layer_order(events)]
    traces: list[go.Scatter] = []
    for kind, grp in ev.groupby("kind", sort=False):
        color = KIND_COLORS.get(str(kind), "#34495e")
        traces.append(go.Scatter(
            x=grp["seq"].to_numpy(np.float32), y=grp["layer"].tolist(), mode="markers",
            name=str(kind), marker={"color": color, "size": 11,
                                    "symbol": [ROLE_SYMBOLS.get(r, "circle") for r in grp["role"]],
                                    "line": {"width": 1.5, "color": color}},
            customdata=np.stack([grp["role"].astype(str), grp["shape"].astype(str),
                                 grp["phase"].astype(str), grp["call"].astype(str),
                                 grp["index"].astype(str)], axis=1),
            hovertemplate=("#%{x} %{y} [call %{customdata[3]}]<br>%{customdata[2]} / "
                           + str(kind) + " / %{customdata[0]}[%{customdata[4]}]"
                           "<br>shape %{customdata[1]}<extra></extra>"),
        ))
    bad = ev[(ev["nan_count"] > 0) | (ev["inf_count"] > 0)]
    if not bad.empty:
        traces.append(go.Scatter(x=bad["seq"].to_numpy(np.float32), y=bad["layer"].tolist(),
                                 mode="markers", name="NaN/Inf",
                                 marker={"size": 20, "color": "rgba(0,0,0,0)",
                                         "line": {"width": 2.5, "color": "#e74c3c"}},
                                 hoverinfo="skip"))
    # one layout update (add_vrect/add_vline per shape are slow in Plotly)
    shapes: list[dict] = []
    notes: list[dict] = []
    for phase, color in (("forward", "rgba(41,128,185,0.07)"), ("backward",
                                                                 "rgba(192,57,43,0.07)")):
        seqs = ev.loc[ev["phase"] == phase, "seq"]
        if not seqs.empty:
            x0 = float(seqs.min()) - 0.5
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0,
                           "x1": float(seqs.max()) + 0.5, "y0": 0, "y1": 1, "fillcolor": color,
                           "line": {"width": 0}, "layer": "below", "name": phase})
            notes.append({"x": x0, "y": 1, "xref": "x", "yref": "paper", "text": phase,
                          "showarrow": False, "xanchor": "left", "yanchor": "top",
                          "font": {"size": 11, "color": "#555"}})
    fwd = ev.loc[ev["phase"] == "forward", "seq"]
    bwd = ev.loc[ev["phase"] == "backward", "seq"]
    if not fwd.empty and not bwd.empty:
        xm = (float(fwd.max()) + float(bwd.min())) / 2
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": xm, "x1": xm,
                       "y0": 0, "y1": 1, "line": {"dash": "dash", "color": "#555", "width": 1.5},
                       "name": "forward | backward"})
    steps = sorted(set(ev["step"].tolist()))
    t = title + (f" — steps {steps[0]}..{steps[-1]}" if len(steps) > 1 else "")
    fig = go.Figure(data=traces, layout={
        "shapes": shapes, "annotations": notes,
        "yaxis": {"categoryorder": "array", "categoryarray": order[::-1],
                  "title": {"text": "layer"}},
        "xaxis": {"title": {"text": "firing order (seq)"}},
        "legend": {"title": {"text": "hook kind"}}})
    return base_layout(fig, t, height or max(260, 34 * len(order) + 140))


def event_table(events: pd.DataFrame) -> pd.DataFrame:
    """The events as a display table: the statistics columns, and a ``flag`` for NaN/Inf."""
    cols = [c for c in TABLE_COLUMNS if c in events.columns]
    df = events.loc[:, cols].copy()
    df["flag"] = [flag_text(int(n), int(i)) for n, i in zip(df["nan_count"], df["inf_count"],
                                                            strict=True)]
    return df.reset_index(drop=True)


def event_summary(events: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, role): number of firings, total L2 norm, mean, min, max, NaN/Inf totals.

    The norm of several firings (calls, parameters) is ``sqrt(Σ norm²)``.
    """
    if events.empty:
        return pd.DataFrame(columns=["layer", "role", "events", "norm", "mean", "min", "max",
                                     "nan_count", "inf_count"])
    ev = events.assign(_sq=events["norm"] ** 2)
    g = ev.groupby(["layer", "role"], sort=False)
    out = pd.DataFrame({
        "events": g.size(),
        "norm": np.sqrt(g["_sq"].sum()),
        "mean": g["mean"].mean(),
        "min": g["min"].min(),
        "max": g["max"].max(),
        "nan_count": g["nan_count"].sum(),
        "inf_count": g["inf_count"].sum(),
    }).reset_index()
    return out


def event_label(row: pd.Series | dict[str, Any]) -> str:
    """A one-line label for an event: ``"#5 conv2 output (forward, 1x64x16x16)"``."""
    layer = row["layer"] or "(model)"
    idx = f"[{row['index']}]" if str(row["index"]) not in ("", "0") else ""
    call = f" call {row['call']}" if int(row["call"]) else ""
    return (f"#{row['seq']} {layer}{call} {row['role']}{idx} "
            f"({row['phase']}/{row['kind']}, {row['shape'] or 'scalar'})")


# ----------------------------------------------------------------------------------------------
# Tensor views
# ----------------------------------------------------------------------------------------------
def _maps(t: np.ndarray, sample: int) -> tuple[np.ndarray, str]:
    """(C, H, W) maps of one sample and a description of what was taken."""
    if t.ndim == 0:
        return t.reshape(1, 1, 1), "scalar"
    if t.ndim == 1:
        return t.reshape(1, 1, -1), "vector"
    if t.ndim == 2:  # (N, F) -> one row per... show sample's features as a row
        s = min(sample, t.shape[0] - 1)
        return t[s].reshape(1, 1, -1), f"sample {s}"
    if t.ndim == 3:  # (C, H, W) e.g. a parameter-less image
        return t, "C×H×W"
    s = min(sample, t.shape[0] - 1)
    x = t[s]
    while x.ndim > 3:  # e.g. conv weight (O, I, kh, kw) -> (O*I?) keep first 3 dims merged
        x = x.reshape(-1, *x.shape[-2:])
    return x, f"sample {s}" if t.ndim == 4 else f"index {s}"


def tile(maps: np.ndarray, pad: float = np.nan) -> tuple[np.ndarray, int, int]:
    """Tile (C, H, W) maps into one 2-D mosaic (NaN gaps); returns (mosaic, rows, cols)."""
    c, h, w = maps.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), pad, dtype=np.float32)
    for i in range(c):
        r, k = divmod(i, cols)
        out[r * (h + 1): r * (h + 1) + h, k * (w + 1): k * (w + 1) + w] = maps[i]
    return out, rows, cols


def channel_maps(tensor: Any, title: str = "", sample: int = 0, colorscale: str = "Viridis",
                 max_values: int = MAX_VALUES, height: int | None = None) -> go.Figure:
    """Channel maps of one sample: facets up to :data:`MAX_FACETS` channels, one tiled heatmap
    beyond; 1-D/2-D tensors as a single row. NaN/Inf are blank and flagged.
    """
    t = to_f32(tensor)
    maps, what = _maps(t, sample)
    nan, inf = nonfinite_counts(maps)
    maps = finite(maps)
    signed = bool(np.nanmin(maps) < 0) if np.isfinite(maps).any() else False
    scale = "RdBu_r" if signed else colorscale
    zmid = 0.0 if signed else None
    c, h, w = maps.shape
    shown = f"{what}, {c} channel{'s' if c != 1 else ''} of {h}×{w}"
    if 1 < c <= MAX_FACETS:
        cols = min(c, 8)
        rows = math.ceil(c / cols)
        total = c * h * w
        step = math.ceil(math.sqrt(total / max_values)) if total > max_values else 1
        layout, cell = grid(rows, cols, [f"ch {i}" for i in range(c)], hspace=0.01,
                            vspace=0.08, images=range(1, rows * cols + 1))
        for a in layout["annotations"]:
            a["font"] = {"size": 10}
        lim = robust_signed_range(maps) if signed else None
        traces = []
        for i in range(c):
            z = maps[i][::step, ::step]
            hm = heatmap(z, colorscale=scale, name=f"ch {i}", zmid=zmid,
                         zmin=-lim if lim else None, zmax=lim, showscale=i == 0)
            hm.update(cell(i // cols + 1, i % cols + 1))
            traces.append(hm)
        fig = go.Figure(data=traces, layout=layout)
        base_layout(fig, f"{title} — {shown}{budget_note(step)}",
                    height or max(220, 150 * rows + 70))
    else:
        mosaic = maps[0] if c == 1 else tile(maps)[0]
        z, step = downsample2d(mosaic, max_values)
        lim = robust_signed_range(z) if signed else None
        fig = go.Figure(heatmap(z, colorscale=scale, name=title, zmid=zmid,
                                zmin=-lim if lim else None, zmax=lim, showscale=True))
        image_axes(fig, 1)
        note = " tiled" if c > 1 else ""
        h_px = height or (200 if z.shape[0] == 1 else 420)
        base_layout(fig, f"{title} — {shown}{note}{budget_note(step)}", h_px)
    return add_flag(fig, nan, inf)


def histogram(tensor: Any, title: str = "", bins: int = 60, color: str = "#2980b9",
              height: int = 260) -> go.Figure:
    """Histogram of the finite values (binned here: at most ``bins`` bars go to the browser)."""
    t = to_f32(tensor).reshape(-1)
    nan, inf = nonfinite_counts(t)
    f = t[np.isfinite(t)]
    fig = go.Figure()
    if f.size:
        lo, hi = float(f.min()), float(f.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(f, bins=bins, range=(lo, hi))
        centres = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)
        fig.add_trace(go.Bar(x=centres, y=counts.astype(np.float32), marker_color=color,
                             width=float(edges[1] - edges[0]), name=title or "values"))
    fig.update_xaxes(title_text="value")
    fig.update_yaxes(title_text="count")
    base_layout(fig, f"{title} — histogram of {f.size} values", height)
    return add_flag(fig, nan, inf)


def stats_table(tensor: Any) -> pd.DataFrame:
    """Statistics of a tensor as a two-column table (statistic, value)."""
    t = tensor if isinstance(tensor, torch.Tensor) else torch.as_tensor(to_f32(tensor))
    s: dict[str, Any] = {"shape": "×".join(map(str, t.shape)) or "scalar", **tensor_stats(t)}
    return pd.DataFrame({"statistic": list(s), "value": [str(v) if isinstance(v, str) else
                                                          f"{v:.6g}" for v in s.values()]})


def _mean_map(t: np.ndarray, sample: int, channel: int | None) -> tuple[np.ndarray, str]:
    maps, _ = _maps(t, sample)
    if channel is not None and 0 <= channel < maps.shape[0]:
        return maps[channel], f"channel {channel}"
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN pixel gives NaN, shown
        return np.nanmean(finite(maps), axis=0), "mean over channels"


def tensor_pair(activation: Any | None, gradient: Any | None, *, sample: int = 0,
                channel: int | None = None, titles: Sequence[str] = ("activation", "gradient"),
                max_values: int = MAX_VALUES, height: int = 520) -> go.Figure:
    """Activation and gradient of one layer side by side: map (one channel, or the mean over
    channels) on top, histogram below. Either side may be ``None`` (not recorded).
    """
    nan = inf = 0
    step_max = 1
    labels = list(titles)
    traces: list[Any] = []
    cell = grid(2, 2)[1]
    for col, (tensor, color) in enumerate(((activation, "#2980b9"), (gradient, "#c0392b")),
                                          start=1):
        if tensor is None:
            labels[col - 1] = f"{titles[col - 1]}: not recorded"
            continue
        t = to_f32(tensor)
        n, i = nonfinite_counts(t)
        nan, inf = nan + n, inf + i
        m, what = _mean_map(t, sample, channel)
        m = m if m.ndim == 2 else m.reshape(1, -1)
        z, step = downsample2d(m, max_values // 2)
        step_max = max(step_max, step)
        signed = col == 2 or bool(np.isfinite(z).any() and np.nanmin(z) < 0)
        lim = robust_signed_range(z)
        hm = heatmap(z, colorscale="RdBu_r" if signed else "Viridis", name=titles[col - 1],
                     zmid=0.0 if signed else None, zmin=-lim if signed else None,
                     zmax=lim if signed else None)
        hm.update(cell(1, col))
        traces.append(hm)
        labels[col - 1] = f"{titles[col - 1]} ({what})"
        flat, _ = downsample1d(t, max_values // 2)
        f = flat[np.isfinite(flat)]
        if f.size:
            lo, hi = float(f.min()), float(f.max())
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            counts, edges = np.histogram(f, bins=50, range=(lo, hi))
            traces.append(go.Bar(x=((edges[:-1] + edges[1:]) / 2).astype(np.float32),
                                 y=counts.astype(np.float32), marker_color=color,
                                 width=float(edges[1] - edges[0]), showlegend=False,
                                 name=f"{titles[col - 1]} histogram", **cell(2, col)))
    layout, _ = grid(2, 2, [labels[0], labels[1]], hspace=0.08, vspace=0.1,
                     row_heights=[0.68, 0.32], images=[1, 2])
    layout["showlegend"] = False
    fig = go.Figure(data=traces, layout=layout)
    base_layout(fig, f"activation | gradient{budget_note(step_max)}", height)
    return add_flag(fig, nan, inf)
