"""The layer sweep as a figure: the score of every layer × method as a heatmap.

Pure function: a :attr:`hooklab.cam.sweep.SweepResult.table`-like DataFrame in, ``go.Figure``
out; labels come from the caller.

Example:
    >>> fig = sweep_heatmap(res.table, layers=list(res.layers["layer"]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from hooklab.charts.common import plain_text

__all__ = ["sweep_heatmap"]


def sweep_heatmap(table: Any, *, layers: Sequence[str] | None = None,
                  methods: Sequence[str] | None = None, value: str = "score",
                  method_titles: Mapping[str, str] | None = None,
                  colorbar_title: str = "insertion − deletion", height: int | None = None
                  ) -> go.Figure:
    """One cell per (layer, method): the pair's ``value`` (default the sweep's score).

    Args:
        table: rows with ``layer``, ``method`` and ``value`` columns.
        layers: row order, top first (default: the table's order of first appearance; pass the
            ranked layers to put the recommended one on top).
        methods: column order (default: first appearance).
        value: the column shown.
        method_titles: display names of the methods.
        colorbar_title: the colour bar's title.
        height: figure height (default from the number of layers).

    Raises:
        ValueError: the table lacks a column, or is empty.
    """
    for col in ("layer", "method", value):
        if col not in table.columns:
            raise ValueError(f"the sweep table has no {col!r} column")
    if len(table) == 0:
        raise ValueError("the sweep table is empty")
    rows = list(layers) if layers is not None else list(dict.fromkeys(table["layer"]))
    cols = list(methods) if methods is not None else list(dict.fromkeys(table["method"]))
    z = np.full((len(rows), len(cols)), np.nan, dtype=np.float32)
    for lay, m, v in zip(table["layer"], table["method"], table[value], strict=True):
        if lay in rows and m in cols:
            z[rows.index(lay), cols.index(m)] = float(v)
    titles = method_titles or {}
    text = [[("" if np.isnan(v) else f"{v:.3f}") for v in r] for r in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=[plain_text(titles.get(m, m)) for m in cols], y=[plain_text(r) for r in rows],
        text=text, texttemplate="%{text}", colorscale="Viridis",
        colorbar={"title": {"text": plain_text(colorbar_title)}},
        hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(height=height or 120 + 40 * len(rows),
                      margin={"l": 90, "r": 10, "t": 20, "b": 40},
                      yaxis={"autorange": "reversed"})
    return fig
