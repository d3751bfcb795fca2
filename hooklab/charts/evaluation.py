"""A dataset-wide CAM evaluation as tables and a figure: the summary with each metric's
direction, and the per-image distribution per method × layer (one panel per metric).

Pure functions: the tables of :func:`hooklab.studies.evaluation.read_evaluation` in, a
DataFrame or ``go.Figure`` out; labels come from the caller.

Example:
    >>> res = read_evaluation(store, "eval-2157502d7df28301")
    >>> summary_table(res.summary)                       # + "better" and "mean ± sd"
    >>> fig = per_image_box(res.per_image, ["deletion_auc", "insertion_auc"])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hooklab.charts.common import AB_COLORS, grid, plain_text, to_f32

__all__ = ["BETTER", "per_image_box", "summary_table"]

#: Which way each per-image metric column is better (hooklab.cam.metrics, hooklab.cam.road).
BETTER: dict[str, str] = {
    "pointing": "higher",
    "average_drop": "lower",
    "increase_confidence": "higher",
    "deletion_auc": "lower",
    "insertion_auc": "higher",
    "road_morf": "lower",
    "road_lerf": "higher",
    "road_combined": "higher",
}
_COLORS = ("#2980b9", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d")


def _pm(mean: float, sd: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {sd:.3g}"


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary (method, layer, metric, n, mean, sd) with ``better`` (``"higher"`` /
    ``"lower"``, ``""`` for an unknown metric) after ``metric`` and a ``mean ± sd`` text column;
    the numbers are the summary's own."""
    out = summary.copy()
    out.insert(out.columns.get_loc("metric") + 1, "better",
               [BETTER.get(str(m), "") for m in out["metric"]])
    out["mean ± sd"] = [_pm(m, s) for m, s in zip(out["mean"], out["sd"], strict=True)]
    return out.reset_index(drop=True)


def per_image_box(per_image: pd.DataFrame, metrics: Sequence[str], *,
                  titles: Mapping[str, str] | None = None, height: int | None = None
                  ) -> go.Figure:
    """One panel per metric column: a box with every image's point per method × layer.

    Args:
        per_image: rows with ``index``, ``method``, ``layer`` and the metric columns.
        metrics: the metric columns, in panel order (columns the table lacks are skipped).
        titles: panel titles per metric (default: the column name and its direction).
        height: figure height (default from the number of panel rows).

    Returns:
        A figure with one ``go.Box`` trace per (metric, method × layer); a trace's ``name`` is
        ``"<method> · <layer>"``, its ``y`` the per-image values (float32), its ``text`` the
        image indices.
    """
    cols = [m for m in metrics if m in per_image.columns]
    ncol = min(3, max(1, len(cols)))
    nrow = max(1, math.ceil(len(cols) / ncol))
    names = [titles[c] if titles and c in titles else
             f"{c} ({BETTER[c]} is better)" if c in BETTER else c for c in cols]
    layout, cell = grid(nrow, ncol, [plain_text(n) for n in names], hspace=0.08, vspace=0.18)
    pairs = list(dict.fromkeys(zip(per_image["method"].astype(str),
                                   per_image["layer"].astype(str), strict=True)))
    colors = {p: _COLORS[i % len(_COLORS)] if len(pairs) > 1 else AB_COLORS[0]
              for i, p in enumerate(pairs)}
    traces = []
    for k, col in enumerate(cols):
        where = cell(k // ncol + 1, k % ncol + 1)
        for method, layer in pairs:
            rows = per_image[(per_image["method"].astype(str) == method)
                             & (per_image["layer"].astype(str) == layer)]
            label = plain_text(f"{method} · {layer}")
            traces.append(go.Box(
                y=to_f32(rows[col].to_numpy(dtype=np.float64)), name=label,
                text=[f"image {int(i)}" for i in rows["index"]], boxpoints="all",
                jitter=0.4, pointpos=0, marker={"color": colors[(method, layer)], "size": 5},
                legendgroup=label, showlegend=k == 0,
                hovertemplate="%{text}: %{y:.4g}<extra>" + label + "</extra>", **where))
    fig = go.Figure(traces, layout)
    fig.update_layout(height=height or 300 * nrow + 60, margin={"l": 40, "r": 20, "t": 40,
                                                                 "b": 40},
                      boxmode="group", legend={"orientation": "h", "y": -0.08})
    return fig
