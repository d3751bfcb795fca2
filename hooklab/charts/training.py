"""Figures of a watched training (:func:`hooklab.watch`): gradient-norm heatmap, scalar curves,
update ratios, dead units, the first NaN/Inf, and two runs' per-layer ratio over steps.

Inputs are a watch run's ``events`` and ``scalars`` tables (see
:mod:`hooklab.studies.training_views`, which builds the layer x step matrices these figures
draw). Long runs are downsampled over steps to at most ``max_steps`` columns (bins of
consecutive steps, mean or max per bin) and the title says so.

Example:
    >>> run = hooklab.store.stream.open_watch(store, run_id)
    >>> fig = grad_norm_heatmap(run.events, "grad_output")   # layer x step, log10 colour
    >>> fig = scalar_curves(run.scalars)                     # loss, acc, ...
    >>> fig = update_ratio_lines(run.scalars)                # log y, 1e-3 guide
    >>> fig = ratio_heatmap(a.events, b.events, names=("no edit", "conv2=scale(0.5)"))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hooklab.charts.common import (
    AB_COLORS,
    MAX_VALUES,
    base_layout,
    finite,
    plain_text,
    to_f32,
)
from hooklab.studies.training_views import (
    ROLES,
    How,
    NonFinite,
    StepBinning,
    downsample_steps,
    first_nonfinite,
    norm_matrix,
    ratio_matrix,
    scalar_matrix,
)

__all__ = ["MAX_STEPS", "GUIDE_RATIO", "step_budget", "log_heatmap", "grad_norm_heatmap",
           "mark_nonfinite", "scalar_curves", "update_ratio_lines", "dead_fraction_heatmap",
           "ratio_heatmap"]

#: Default most step columns (or points per line) a figure shows.
MAX_STEPS = 600
#: The usual healthy update-to-weight ratio ||Δw|| / ||w|| (Karpathy's rule of thumb).
GUIDE_RATIO = 1e-3
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def step_budget(rows: int, max_steps: int = MAX_STEPS, per_cell: int = 2) -> int:
    """Columns allowed for ``rows`` rows: ``max_steps``, lowered so that
    ``rows * columns * per_cell`` stays within :data:`~hooklab.charts.common.MAX_VALUES`."""
    return max(1, min(max_steps, MAX_VALUES // max(1, rows * per_cell)))


def _title(text: str, binning: StepBinning) -> str:
    note = binning.note()
    return f"{text} — {note}" if note else text


def _height(rows: int) -> int:
    return max(260, 18 * rows + 150)


def _log_ticks(z: np.ndarray) -> dict[str, Any]:
    """Colour-bar ticks at integer powers of ten for log10 values: ``1e-3``, ``0.01``, ``1``..."""
    f = z[np.isfinite(z)]
    if not f.size:
        return {}
    lo, hi = math.floor(float(f.min())), math.ceil(float(f.max()))
    vals = list(range(lo, hi + 1))
    if len(vals) > 12:
        vals = vals[:: math.ceil(len(vals) / 12)]
    return {"tickvals": vals, "ticktext": [f"{10.0 ** v:g}" for v in vals]}


def _ratio_ticks(lim: float) -> dict[str, Any]:
    """Ratio colour-bar ticks at powers of two (``0.25, 0.5, 1, 2, 4``) within ``±lim`` (log10)."""
    k = max(1, math.floor(lim / math.log10(2.0)))
    step = math.ceil(k / 4)
    ks = sorted({*range(0, k + 1, step), *range(0, -k - 1, -step)})
    return {"tickvals": [i * math.log10(2.0) for i in ks],
            "ticktext": [f"{2.0 ** i:g}" for i in ks]}


def log_heatmap(matrix: pd.DataFrame, *, title: str, colorbar: str,
                colorscale: str = "Viridis", diverging: bool = False, hover: str = "value",
                height: int | None = None) -> go.Figure:
    """A layer x step matrix as a heatmap of ``log10(value)`` (zero, negative or missing values
    are blank), first row at the top; the hover shows the value itself.

    ``diverging``: a ratio scale centred on 1 (``log10 = 0``), symmetric, red below / blue above.
    """
    raw = to_f32(matrix.to_numpy(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log10(raw)
    z = finite(z)
    ticks = _log_ticks(z)
    kw: dict[str, Any] = {}
    if diverging:
        f = z[np.isfinite(z)]
        lim = float(np.abs(f).max()) if f.size else 0.0
        lim = max(lim, math.log10(2.0))  # at least 0.5 .. 2, so 1 is mid-scale, not an end
        kw = {"zmid": 0.0, "zmin": -lim, "zmax": lim}
        colorscale = "RdBu"
        ticks = _ratio_ticks(lim)
    rows = [plain_text(x) for x in matrix.index]  # a run's layer names: text, not HTML
    trace = go.Heatmap(
        z=z, x=np.asarray(matrix.columns, dtype=np.float32), y=rows, customdata=raw,
        colorscale=colorscale, name=colorbar,
        colorbar={"title": {"text": colorbar}, **ticks},
        hovertemplate="%{y}, step %{x}<br>" + hover + " %{customdata:.4g}<extra></extra>",
        **kw)
    fig = go.Figure(trace, layout={
        "yaxis": {"autorange": "reversed", "title": {"text": "layer"}, "type": "category"},
        "xaxis": {"title": {"text": "step"}}})
    return base_layout(fig, title, height or _height(len(rows)))


def mark_nonfinite(fig: go.Figure, found: NonFinite | None, columns: Sequence[int],
                   rows: Sequence[str]) -> go.Figure:
    """Ring the cell of the first NaN/Inf (step, layer) on a layer x step heatmap and say where.

    ``rows`` are the heatmap's row labels (layer names as :func:`plain_text` writes them).
    ``columns`` are the heatmap's step columns (bin starts after downsampling): the marker goes
    on the bin holding ``found.step``. Nothing is drawn when ``found`` is None; when its layer is
    not a row of this heatmap, only the note is added.
    """
    if found is None:
        return fig
    cols = np.asarray(columns, dtype=np.int64)
    text = "first NaN/Inf: " + plain_text(found.text())  # a run's layer name: text, not HTML
    if plain_text(found.layer) in list(rows) and cols.size:
        pos = int(np.searchsorted(cols, found.step, side="right")) - 1
        x = float(cols[max(pos, 0)])
        fig.add_trace(go.Scatter(
            x=[x], y=[plain_text(found.layer)], mode="markers", name="first NaN/Inf",
            marker={"symbol": "x-thin-open", "size": 18, "color": "#e74c3c",
                    "line": {"width": 3, "color": "#e74c3c"}},
            hovertemplate=text + "<extra></extra>", showlegend=False))
    fig.add_annotation(text="⚠ " + text, xref="paper", yref="paper", x=0, y=1.0,
                       yanchor="bottom", showarrow=False, xanchor="left",
                       font={"color": "#c0392b", "size": 12}, name="nonfinite")
    return fig


def grad_norm_heatmap(events: pd.DataFrame, role: str = "grad_output", *,
                      max_steps: int = MAX_STEPS, how: How = "mean", mark: bool = True,
                      height: int | None = None) -> go.Figure:
    """Per-layer norm over steps (layer x step, log10 colour): output gradients, parameter
    gradients (all of a layer's parameters together) or activations (``role="output"``).

    ``z`` is ``log10`` of :func:`~hooklab.studies.training_views.norm_matrix` after
    :func:`~hooklab.studies.training_views.downsample_steps` (``how`` per bin). With ``mark``, the
    first NaN/Inf of the run (:func:`~hooklab.studies.training_views.first_nonfinite`) is ringed
    and named above the plot.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    what = ROLES[role]
    mat = norm_matrix(events, role)
    if mat.empty:
        return base_layout(go.Figure(), f"{what.capitalize()} norm per layer (none recorded)",
                           240)
    small, binning = downsample_steps(mat, step_budget(len(mat), max_steps), how)
    fig = log_heatmap(small, title=_title(f"{what.capitalize()} norm per layer", binning),
                      colorbar="‖·‖ (log)", hover="norm", height=height)
    if mark:
        mark_nonfinite(fig, first_nonfinite(events), list(small.columns),
                       [plain_text(x) for x in small.index])
    return fig


def _line_frame(frames: pd.DataFrame | Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    if isinstance(frames, pd.DataFrame):
        return {"": frames}
    return dict(frames)


def scalar_curves(scalars: pd.DataFrame | Mapping[str, pd.DataFrame],
                  names: Sequence[str] | None = None, *, max_steps: int = 2000,
                  how: How = "mean", height: int = 320) -> go.Figure:
    """The user's scalars (loss, accuracy, ...) over steps, one panel per name.

    ``scalars``: one run's scalars table, or ``{"run name": scalars, ...}`` to draw several runs
    in the same panels (one colour per run). Lines longer than ``max_steps`` points are binned
    (``how`` per bin; the title says so).
    """
    runs = _line_frame(scalars)
    mats = {k: scalar_matrix(v, names=list(names) if names is not None else None)
            for k, v in runs.items()}
    shown = list(dict.fromkeys(n for m in mats.values() for n in m.index))
    fig = make_subplots(rows=1, cols=max(1, len(shown)),  # scalar names from a run: text
                        subplot_titles=[plain_text(n) for n in shown] or ["—"],
                        horizontal_spacing=0.08)
    notes: set[str] = set()
    for i, (run, mat) in enumerate(mats.items()):
        small, binning = downsample_steps(mat, max_steps, how)
        if binning.downsampled:
            notes.add(binning.note())
        color = AB_COLORS[i] if len(mats) <= len(AB_COLORS) else PALETTE[i % len(PALETTE)]
        for col, name in enumerate(shown, start=1):
            if name not in small.index:
                continue
            fig.add_trace(go.Scatter(
                x=np.asarray(small.columns, dtype=np.float32),
                y=to_f32(small.loc[name].to_numpy(np.float64)), mode="lines",
                name=plain_text(run or name), legendgroup=run or name, connectgaps=True,
                showlegend=bool(run) and col == 1, line={"color": color}), row=1, col=col)
            fig.update_xaxes(title_text="step", row=1, col=col)
    title = ("Training: " + ", ".join(shown)) if shown else "Training scalars (none logged)"
    if notes:
        title += " — " + "; ".join(sorted(notes))
    return base_layout(fig, title, height)


def update_ratio_lines(scalars: pd.DataFrame, *, max_steps: int = MAX_STEPS, how: How = "mean",
                       guide: float = GUIDE_RATIO, height: int = 380) -> go.Figure:
    """Update-to-weight ratio ``‖Δw‖ / ‖w‖`` per parameter over steps (log y) with a dashed guide
    line at ``guide`` (1e-3: much lower, the parameter barely learns; much higher, it may be
    unstable). Reads the ``update_ratio/<param>`` scalars."""
    mat = scalar_matrix(scalars, prefix="update_ratio/")
    if mat.empty:
        return base_layout(go.Figure(), "Update ratio ‖Δw‖/‖w‖ (none recorded)", 240)
    small, binning = downsample_steps(mat, step_budget(len(mat), max_steps, 1), how)
    x = np.asarray(small.columns, dtype=np.float32)
    traces = [go.Scatter(x=x, y=to_f32(small.loc[p].to_numpy(np.float64)), mode="lines",
                         name=str(p), connectgaps=True,
                         line={"color": PALETTE[i % len(PALETTE)], "width": 1.5})
              for i, p in enumerate(small.index)]
    fig = go.Figure(traces, layout={
        "yaxis": {"type": "log", "title": {"text": "‖Δw‖ / ‖w‖"}},
        "xaxis": {"title": {"text": "step"}},
        "shapes": [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": guide,
                    "y1": guide, "line": {"dash": "dash", "color": "#555", "width": 1.5},
                    "name": "guide"}],
        "annotations": [{"text": f"{guide:g}", "xref": "paper", "x": 1, "yref": "y", "y":
                         math.log10(guide), "showarrow": False, "xanchor": "right",
                         "yanchor": "bottom", "font": {"size": 11, "color": "#555"}}]})
    return base_layout(fig, _title("Update ratio ‖Δw‖/‖w‖ per parameter", binning), height)


def dead_fraction_heatmap(scalars: pd.DataFrame, *, max_steps: int = MAX_STEPS,
                          how: How = "mean", height: int | None = None) -> go.Figure:
    """Fraction of dead units (zero for every sample of the batch) per layer over steps, as a
    layer x step heatmap on a fixed [0, 1] scale. Reads the ``dead_frac/<layer>`` scalars."""
    mat = scalar_matrix(scalars, prefix="dead_frac/")
    if mat.empty:
        return base_layout(go.Figure(), "Dead units per layer (none recorded)", 240)
    small, binning = downsample_steps(mat, step_budget(len(mat), max_steps), how)
    rows = [plain_text(x) for x in small.index]
    z = to_f32(small.to_numpy(np.float64))
    fig = go.Figure(go.Heatmap(
        z=finite(z), x=np.asarray(small.columns, dtype=np.float32), y=rows, zmin=0.0, zmax=1.0,
        colorscale="Reds", colorbar={"title": {"text": "dead"}}, name="dead fraction",
        hovertemplate="%{y}, step %{x}<br>dead %{z:.1%}<extra></extra>"), layout={
        "yaxis": {"autorange": "reversed", "title": {"text": "layer"}, "type": "category"},
        "xaxis": {"title": {"text": "step"}}})
    return base_layout(fig, _title("Dead units per layer (fraction zero for every sample)",
                                   binning), height or _height(len(rows)))


def ratio_heatmap(events_a: pd.DataFrame, events_b: pd.DataFrame, role: str = "grad_output",
                  *, names: Sequence[str] = ("A", "B"), max_steps: int = MAX_STEPS,
                  how: How = "mean", height: int | None = None) -> go.Figure:
    """Two runs side by side: per-layer norm ratio ``B / A`` over the steps both recorded,
    log colour centred on 1 (red: B smaller, blue: B larger). ``z`` is ``log10`` of
    :func:`~hooklab.studies.training_views.ratio_matrix` (after downsampling)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    ratio = ratio_matrix(events_a, events_b, role)
    what = ROLES[role]
    if ratio.empty or ratio.shape[1] == 0:
        return base_layout(go.Figure(), f"{what.capitalize()} norm ratio {names[1]} / {names[0]}"
                           " (no common layers and steps)", 240)
    small, binning = downsample_steps(ratio, step_budget(len(ratio), max_steps), how)
    title = _title(f"{what.capitalize()} norm ratio {names[1]} / {names[0]} per layer",
                   binning)
    return log_heatmap(small, title=title, colorbar="ratio", diverging=True, hover="ratio",
                       height=height)
