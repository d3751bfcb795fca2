"""An edit sweep's trials as a table and figures: the final accuracy per configuration (one point
per seed) and each trial's per-layer gradient-norm ratio over training against the no-edit trial
of the same seed (one panel per layer, one line per trial, log y, a dashed line at 1).

Pure functions: the tables of :mod:`hooklab.studies.sweep.store` (``load_sweep(...).trials``,
``sweep_ratios(...)``) in, a DataFrame or ``go.Figure`` out; labels come from the caller.

Example:
    >>> res = load_sweep(store, sweep_id)
    >>> fig = final_accuracy(res.trials)
    >>> fig = ratio_lines(sweep_ratios(store, res.trials))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hooklab.charts.common import MAX_VALUES, budget_note, grid, plain_text, to_f32
from hooklab.studies.sweep.trial import baseline_label

__all__ = ["TABLE_COLUMNS", "final_accuracy", "ratio_lines", "trial_label", "trials_table"]

#: Columns of :func:`trials_table`, in display order.
TABLE_COLUMNS = ("trial", "config", "seed", "final_accuracy", "final_loss", "status", "message",
                 "run_id")
_COLORS = ("#2980b9", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d",
           "#f39c12", "#2c3e50", "#e84393")


def trial_label(trial: int, config: str, seed: int) -> str:
    """``"t2 conv2=scale(0.5) · seed 0"`` (the empty configuration reads ``no edit``)."""
    return f"t{int(trial)} {baseline_label(str(config))} · seed {int(seed)}"


def trials_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials in :data:`TABLE_COLUMNS` order, the empty configuration shown as ``no edit``;
    the numbers are the trials' own."""
    out = trials.loc[:, [c for c in TABLE_COLUMNS if c in trials.columns]].copy()
    out["config"] = [baseline_label(str(c)) for c in out["config"]]
    return out.reset_index(drop=True)


def final_accuracy(trials: pd.DataFrame, *, title: str = "Final test accuracy per configuration",
                   y_title: str = "accuracy", height: int = 360) -> go.Figure:
    """One marker per trial at (configuration, final accuracy), one trace per seed; the
    configurations in the grid's order (first appearance); trials with no accuracy (failed,
    missing) are left out of the points."""
    configs = list(dict.fromkeys(baseline_label(str(c)) for c in trials["config"]))
    traces = []
    for k, (seed, grp) in enumerate(trials.groupby("seed", sort=True)):
        acc = grp["final_accuracy"].to_numpy(dtype=np.float64)
        keep = np.isfinite(acc)
        x = [plain_text(baseline_label(str(c))) for c in grp["config"][keep]]
        label = [plain_text(trial_label(t, c, s)) for t, c, s in
                 zip(grp["trial"][keep], grp["config"][keep], grp["seed"][keep], strict=True)]
        traces.append(go.Scatter(
            x=x, y=to_f32(acc[keep]), mode="markers", name=f"seed {int(str(seed))}",
            text=label, marker={"size": 11, "color": _COLORS[k % len(_COLORS)],
                                "line": {"width": 1, "color": "white"}},
            hovertemplate="%{text}: %{y:.4f}<extra></extra>"))
    fig = go.Figure(traces)
    fig.update_layout(
        title={"text": plain_text(title)}, height=height,
        margin={"l": 50, "r": 20, "t": 60, "b": 40}, legend={"title": {"text": "seed"}},
        xaxis={"type": "category", "categoryorder": "array",
               "categoryarray": [plain_text(c) for c in configs]},
        yaxis={"title": {"text": plain_text(y_title)}, "rangemode": "tozero"})
    return fig


def ratio_lines(ratios: pd.DataFrame, *, layers: Sequence[str] | None = None,
                title: str = "Gradient-norm ratio to the no-edit trial of the same seed",
                y_title: str = "ratio (log)", height: int | None = None,
                max_values: int = MAX_VALUES) -> go.Figure:
    """One panel per layer; in each, one line per trial: ratio over training step (log y).

    Args:
        ratios: rows with ``trial``, ``config``, ``seed``, ``layer``, ``step``, ``ratio``
            (:data:`hooklab.studies.sweep.RATIO_COLUMNS`).
        layers: panel order (default: first appearance).
        title, y_title: the figure's title and the y axes' title.
        height: figure height (default from the number of panel rows).
        max_values: most points sent; beyond it every k-th step is kept and the title says so.

    Returns:
        A figure with one ``go.Scatter`` per (layer, trial): ``name`` the trial's label
        (:func:`trial_label`), ``x`` the steps, ``y`` the ratios (float32; a ratio that is not
        positive and finite is NaN: a gap on the log axis); a dashed line at 1 per panel.
    """
    names = list(layers) if layers is not None else list(dict.fromkeys(
        ratios["layer"].astype(str)))
    ncol = min(3, max(1, len(names)))
    nrow = max(1, math.ceil(len(names) / ncol))
    stride = max(1, math.ceil(len(ratios) / max_values))
    layout, cell = grid(nrow, ncol, [plain_text(n) for n in names], hspace=0.06, vspace=0.14)
    trials = list(dict.fromkeys(zip(ratios["trial"].astype(int), ratios["config"].astype(str),
                                    ratios["seed"].astype(int), strict=True)))
    traces = []
    for k, layer in enumerate(names):
        where = cell(k // ncol + 1, k % ncol + 1)
        in_layer = ratios[ratios["layer"].astype(str) == layer]
        for i, (trial, config, seed) in enumerate(trials):
            rows = in_layer[in_layer["trial"] == trial].sort_values("step")
            steps = rows["step"].to_numpy()[::stride]
            r = rows["ratio"].to_numpy(dtype=np.float64)[::stride]
            r = np.where(np.isfinite(r) & (r > 0), r, np.nan)
            label = plain_text(trial_label(trial, config, seed))
            traces.append(go.Scatter(
                x=to_f32(steps), y=to_f32(r), mode="lines+markers" if len(r) < 60 else "lines",
                name=label, legendgroup=label, showlegend=k == 0,
                line={"color": _COLORS[i % len(_COLORS)]}, marker={"size": 4},
                hovertemplate=f"{label}<br>{plain_text(layer)} step %{{x}}: %{{y:.4g}}"
                              "<extra></extra>", **where))
    fig = go.Figure(traces, layout)
    for k in range(len(names)):
        suffix = "" if k == 0 else str(k + 1)
        fig.layout[f"yaxis{suffix}"].update(type="log")
        fig.add_shape(type="line", xref=f"x{suffix} domain", x0=0, x1=1, yref=f"y{suffix}",
                      y0=1.0, y1=1.0, name="ratio 1",
                      line={"dash": "dash", "color": "#7f8c8d", "width": 1})
    fig.layout["yaxis"].update(title={"text": plain_text(y_title)})
    fig.update_layout(title={"text": plain_text(title + budget_note(stride))},
                      height=height or 260 * nrow + 80,
                      margin={"l": 50, "r": 20, "t": 70, "b": 40},
                      legend={"orientation": "h", "y": -0.1})
    return fig
