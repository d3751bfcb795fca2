"""Figures for A/B comparisons (:mod:`hooklab.studies.compare`): norm ratios, input gradients, CAMs,
training curves.

Example:
    >>> cmp = hooklab.studies.compare.compare_edits(model, x, None, {"conv2": "scale(0.5)"})
    >>> fig = ratio_bars(cmp.table)                  # conv1 0.5, conv2 0.5, conv3 1.0, ...
    >>> fig = input_grad_maps(cmp.input_grad_a, cmp.input_grad_b)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hooklab.charts.cam import JET_COLORSCALE
from hooklab.charts.common import (
    AB_COLORS,
    MAX_VALUES,
    add_flag,
    base_layout,
    budget_note,
    downsample2d,
    grid,
    heatmap,
    nonfinite_counts,
    robust_signed_range,
    to_f32,
)

QUANTITY_TITLES = {"param_grad": "parameter gradients", "grad_output": "output gradients",
                   "input_grad": "input gradient"}


def ratio_bars(table: pd.DataFrame, quantity: str | Sequence[str] = ("input_grad", "param_grad"),
               names: Sequence[str] = ("A", "B"), height: int = 360) -> go.Figure:
    """Per-layer gradient-norm ratio ``B / A`` as bars, with a reference line at 1.

    Args:
        table: :func:`hooklab.studies.compare.norm_table` output.
        quantity: which rows (``"param_grad"``, ``"grad_output"``, ``"input_grad"``, or several).
        names: the two configurations' names (for the title and hover).

    The bar text is the ratio; the hover shows both norms. Bars below 1 (the gradient shrank)
    are red, above 1 blue, equal grey.
    """
    qs = [quantity] if isinstance(quantity, str) else list(quantity)
    sel = table[table["quantity"].isin(qs)]
    ratio = sel["ratio"].to_numpy(np.float32)
    colors = ["#7f8c8d" if not np.isfinite(r) or abs(r - 1) < 1e-6 else
              ("#c0392b" if r < 1 else "#2980b9") for r in ratio]
    labels = [f"{lab} ({'param' if q == 'param_grad' else 'out'})" if len(qs) > 1 and
              q != "input_grad" else lab for lab, q in zip(sel["label"], sel["quantity"],
                                                             strict=True)]
    fig = go.Figure(go.Bar(
        x=labels, y=ratio, marker_color=colors, name=f"{names[1]} / {names[0]}",
        text=[f"{r:.3g}" if np.isfinite(r) else "n/a" for r in ratio], textposition="outside",
        customdata=np.stack([sel["norm_a"].to_numpy(np.float32),
                             sel["norm_b"].to_numpy(np.float32)], axis=1) if len(sel) else None,
        hovertemplate=("%{x}<br>" + f"‖{names[0]}‖" + " %{customdata[0]:.4g}<br>"
                       + f"‖{names[1]}‖" + " %{customdata[1]:.4g}<br>ratio %{y:.4g}"
                       "<extra></extra>")))
    fig.add_hline(y=1.0, line_dash="dash", line_color="#555")
    top = float(np.nanmax(ratio)) if ratio.size and np.isfinite(ratio).any() else 1.0
    fig.update_yaxes(title_text=f"‖{names[1]}‖ / ‖{names[0]}‖", range=[0, max(1.2, top * 1.2)])
    what = " + ".join(QUANTITY_TITLES.get(q, q) for q in qs)
    return base_layout(fig, f"Gradient-norm ratio {names[1]} / {names[0]} — {what}", height)


def _map(g: Any, sample: int) -> np.ndarray:
    """A 2-D map of an input gradient: mean |g| over channels of one sample."""
    a = to_f32(g)
    if a.ndim == 4:
        a = a[min(sample, a.shape[0] - 1)]
    if a.ndim == 3:
        with np.errstate(all="ignore"):
            a = np.abs(a).mean(axis=0)
    elif a.ndim == 1:
        a = a.reshape(1, -1)
    return a


def input_grad_maps(grad_a: Any, grad_b: Any, names: Sequence[str] = ("A", "B"),
                    sample: int = 0, height: int = 340) -> go.Figure:
    """Input-gradient maps of A and B (mean ``|∂score/∂x|`` over channels, one shared colour
    scale so a halved gradient looks half as bright) and their difference ``B - A``.
    """
    ma, mb = _map(grad_a, sample), _map(grad_b, sample)
    (ma, step), (mb, _) = downsample2d(ma, MAX_VALUES // 3), downsample2d(mb, MAX_VALUES // 3)
    diff = mb - ma if ma.shape == mb.shape else np.full_like(ma, np.nan)
    top = max(robust_signed_range(ma), robust_signed_range(mb))
    lim = robust_signed_range(diff)
    layout, cell = grid(1, 3, [f"|∂score/∂x| {names[0]}", f"|∂score/∂x| {names[1]}",
                               f"{names[1]} − {names[0]}"], hspace=0.06, images=(1, 2, 3))
    traces = [
        heatmap(ma, colorscale="Viridis", name=names[0], zmin=0, zmax=top),
        heatmap(mb, colorscale="Viridis", name=names[1], zmin=0, zmax=top, showscale=True),
        heatmap(diff, colorscale="RdBu_r", name="difference", zmid=0.0, zmin=-lim, zmax=lim,
                showscale=True),
    ]
    traces[1].colorbar = {"x": 0.645, "len": 0.8, "thickness": 10}
    traces[2].colorbar = {"len": 0.8, "thickness": 10}
    for i, tr in enumerate(traces, start=1):
        tr.update(cell(1, i))
    fig = go.Figure(data=traces, layout=layout)
    nan, inf = nonfinite_counts(np.concatenate([ma.ravel(), mb.ravel()]))
    base_layout(fig, f"Input gradients (sample {sample}){budget_note(step)}", height)
    return add_flag(fig, nan, inf)


def cam_difference(cam_a: Any, cam_b: Any, names: Sequence[str] = ("A", "B"),
                   sample: int = 0, layer: str = "", height: int = 340) -> go.Figure:
    """Grad-CAM of A and B (jet, [0, 1]) and the difference ``B - A`` (diverging).

    Note: Grad-CAM normalises each map, so scaling a gradient uniformly leaves it unchanged.
    """
    a, b = to_f32(cam_a), to_f32(cam_b)
    if a.ndim == 3:
        a, b = a[min(sample, a.shape[0] - 1)], b[min(sample, b.shape[0] - 1)]
    diff = b - a
    lim = robust_signed_range(diff)
    layout, cell = grid(1, 3, [f"Grad-CAM {names[0]}", f"Grad-CAM {names[1]}",
                               f"{names[1]} − {names[0]}"], images=(1, 2, 3))
    traces = [heatmap(a, colorscale=JET_COLORSCALE, name=names[0], zmin=0, zmax=1),
              heatmap(b, colorscale=JET_COLORSCALE, name=names[1], zmin=0, zmax=1),
              heatmap(diff, colorscale="RdBu_r", name="difference", zmid=0.0, zmin=-lim,
                      zmax=lim, showscale=True)]
    for i, tr in enumerate(traces, start=1):
        tr.update(cell(1, i))
    fig = go.Figure(data=traces, layout=layout)
    where = f" at {layer}" if layer else ""
    mx = float(np.nanmax(np.abs(diff))) if diff.size else 0.0
    return base_layout(fig, f"CAM difference{where} (max |B − A| = {mx:.3g})", height)


# ----------------------------------------------------------------------------------------------
# Over training
# ----------------------------------------------------------------------------------------------
def grad_norm_columns(history: pd.DataFrame, prefix: str = "grad_norm") -> dict[str, str]:
    """``{layer: column}`` for per-layer columns ``<prefix>/<layer>`` (also ``:`` or ``.``).

    ``hooklab.studies.train`` writes ``grad_norm/<layer>`` (output gradient) and
    ``param_grad_norm/<layer>`` (parameter gradients).
    """
    pat = re.compile(rf"^{re.escape(prefix)}[/:.](?P<layer>.+)$")
    out = {}
    for c in history.columns:
        m = pat.match(str(c))
        if m:
            out[m.group("layer")] = str(c)
    return out


def _step(history: pd.DataFrame) -> np.ndarray:
    if "step" in history:
        return history["step"].to_numpy(np.float32)
    return np.arange(len(history), dtype=np.float32)


def training_curves(history_a: pd.DataFrame, history_b: pd.DataFrame,
                    names: Sequence[str] = ("A", "B"),
                    metrics: Sequence[str] = ("loss", "accuracy"),
                    height: int = 340) -> go.Figure:
    """Loss and accuracy per step for both configurations, one panel per metric."""
    present = [m for m in metrics if m in history_a or m in history_b]
    fig = make_subplots(rows=1, cols=max(1, len(present)), subplot_titles=present or ["—"],
                        horizontal_spacing=0.08)
    for col, metric in enumerate(present, start=1):
        for hist, name, color in zip((history_a, history_b), names, AB_COLORS, strict=True):
            if metric not in hist:
                continue
            fig.add_trace(go.Scatter(x=_step(hist), y=hist[metric].to_numpy(np.float32),
                                     mode="lines", name=name, legendgroup=name,
                                     showlegend=col == 1, line={"color": color}),
                          row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    return base_layout(fig, "Training: " + " and ".join(present), height)


def grad_norms_over_training(history_a: pd.DataFrame, history_b: pd.DataFrame,
                             names: Sequence[str] = ("A", "B"), log_y: bool = True,
                             prefix: str = "grad_norm", height: int = 360) -> go.Figure:
    """Per-layer gradient norm per step, A and B side by side (same y scale).

    ``prefix``: ``"grad_norm"`` (output gradients) or ``"param_grad_norm"`` (parameters).
    Steps without a recording (NaN) are bridged.
    """
    ca, cb = grad_norm_columns(history_a, prefix), grad_norm_columns(history_b, prefix)
    layers = list(dict.fromkeys([*ca, *cb]))
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"{names[0]}: norm per layer",
                                        f"{names[1]}: norm per layer"])
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    for col, (hist, cols) in enumerate(((history_a, ca), (history_b, cb)), start=1):
        for i, layer in enumerate(layers):
            if layer not in cols:
                continue
            fig.add_trace(go.Scatter(x=_step(hist), y=hist[cols[layer]].to_numpy(np.float32),
                                     mode="lines", name=layer, legendgroup=layer,
                                     showlegend=col == 1, connectgaps=True,
                                     line={"color": palette[i % len(palette)]}),
                          row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    if log_y:
        fig.update_yaxes(type="log")
    what = "parameter gradient" if prefix.startswith("param") else "output gradient"
    title = f"{what.capitalize()} norms over training" + ("" if layers else " (none recorded)")
    return base_layout(fig, title, height)
