"""Shared helpers for the chart builders: float32 arrays, value budget, heatmaps, flags.

Every builder sends float32 numpy arrays to Plotly (float16 or object arrays fall back to slow
JSON lists) and never more than :data:`MAX_VALUES` values per figure; when it has to
downsample it says so in the title (:func:`budget_note`).

Example:
    >>> a, step = downsample2d(np.zeros((4000, 4000), np.float32))
    >>> a.shape, step
    ((1000, 1000), 4)
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

#: Most values one figure sends to the browser.
MAX_VALUES = 1_000_000
#: Most channels shown as separate facets; more are tiled into one heatmap.
MAX_FACETS = 16
#: Colours per hook kind (timeline, tables), stable across charts.
KIND_COLORS: dict[str, str] = {
    "forward_pre": "#8e44ad",
    "forward": "#2980b9",
    "full_backward_pre": "#d35400",
    "full_backward": "#c0392b",
    "backward": "#7f8c8d",
    "tensor": "#e67e22",
    "post_accumulate_grad": "#27ae60",
}
#: Colours for the two sides of a comparison.
AB_COLORS = ("#2980b9", "#c0392b")


def to_f32(a: Any) -> np.ndarray:
    """A float32 numpy array from a tensor, array or nested list (detached, on CPU)."""
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch here
        a = a.detach().cpu()
        if a.is_complex():
            a = a.abs()
        a = a.float().numpy()
    arr = np.asarray(a)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def finite(a: np.ndarray) -> np.ndarray:
    """``a`` with NaN/Inf replaced by NaN (Plotly leaves NaN cells blank)."""
    if np.isfinite(a).all():
        return a
    out = a.copy()
    out[~np.isfinite(out)] = np.nan
    return out


def nonfinite_counts(a: np.ndarray) -> tuple[int, int]:
    """``(nan_count, inf_count)`` of an array."""
    return int(np.isnan(a).sum()), int(np.isinf(a).sum())


def downsample2d(a: np.ndarray, max_values: int = MAX_VALUES) -> tuple[np.ndarray, int]:
    """Stride a 2-D array so it has at most ``max_values`` elements; returns (array, stride)."""
    h, w = a.shape
    if h * w <= max_values:
        return a, 1
    step = math.ceil(math.sqrt(h * w / max_values))
    return a[::step, ::step], step


def downsample1d(a: np.ndarray, max_values: int = MAX_VALUES) -> tuple[np.ndarray, int]:
    """Stride a flat array to at most ``max_values`` elements; returns (array, stride)."""
    a = a.reshape(-1)
    if a.size <= max_values:
        return a, 1
    step = math.ceil(a.size / max_values)
    return a[::step], step


def budget_note(step: int) -> str:
    """Title suffix that says a figure was downsampled (empty when it was not)."""
    return f" (downsampled: every {step}th value)" if step > 1 else ""


def flag_text(nan: int, inf: int) -> str:
    """``"⚠ 3 NaN, 1 Inf"``; empty when both are zero."""
    parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
    body = ", ".join(p for p in parts if p)
    return f"⚠ {body}" if body else ""


def add_flag(fig: go.Figure, nan: int, inf: int) -> go.Figure:
    """Annotate a figure (top left, red) when values were NaN or Inf."""
    text = flag_text(nan, inf)
    if text:
        fig.add_annotation(text=text + " (shown blank)", xref="paper", yref="paper", x=0,
                           y=1.12, showarrow=False, font={"color": "#c0392b", "size": 13},
                           xanchor="left", name="nonfinite")
    return fig


def heatmap(z: np.ndarray, *, colorscale: str | Sequence = "Gray", name: str = "",
            zmid: float | None = None, showscale: bool = False, zmin: float | None = None,
            zmax: float | None = None) -> go.Heatmap:
    """A heatmap trace of a float32 2-D array (row 0 at the top, as ``imshow``)."""
    kw: dict[str, Any] = {}
    if zmid is not None:
        kw["zmid"] = zmid
    if zmin is not None:
        kw["zmin"] = zmin
    if zmax is not None:
        kw["zmax"] = zmax
    return go.Heatmap(z=finite(to_f32(z)), colorscale=colorscale, name=name,
                      showscale=showscale, hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra>"
                      + name + "</extra>", **kw)


def image_axes(fig: go.Figure, n: int, rows: int = 1) -> None:
    """Square pixels and row 0 at the top for ``n`` heatmap subplots."""
    for i in range(1, n * rows + 1):
        suffix = "" if i == 1 else str(i)
        fig.layout[f"yaxis{suffix}"].update(autorange="reversed", scaleanchor=f"x{suffix}",
                                            constrain="domain", showticklabels=False)
        fig.layout[f"xaxis{suffix}"].update(constrain="domain", showticklabels=False)


def grid(rows: int, cols: int, titles: Sequence[str] = (), *, hspace: float = 0.04,
         vspace: float = 0.1, row_heights: Sequence[float] | None = None,
         images: Sequence[int] = ()) -> tuple[dict[str, Any], Callable[[int, int], dict]]:
    """A subplot grid as a plain layout dict (``make_subplots`` costs ~0.2 s per figure).

    Args:
        rows, cols: grid size; cells are numbered row-major from 1.
        titles: one title per cell (row-major), drawn above it.
        hspace, vspace: gaps as fractions of the figure.
        row_heights: relative row heights (default equal).
        images: cell numbers that show images: square pixels, row 0 at the top, no ticks.

    Returns:
        ``(layout, cell)``: ``cell(row, col)`` gives ``{"xaxis": "x2", "yaxis": "y2"}`` to pass
        to a trace.

    Example:
        >>> layout, cell = grid(1, 2, ["a", "b"], images=[1, 2])
        >>> fig = go.Figure([go.Heatmap(z=a, **cell(1, 1)), go.Heatmap(z=b, **cell(1, 2))], layout)
    """
    heights = list(row_heights or [1.0] * rows)
    total = sum(heights)
    usable_h = 1.0 - vspace * (rows - 1)
    usable_w = 1.0 - hspace * (cols - 1)
    w = usable_w / cols
    layout: dict[str, Any] = {"annotations": []}
    top = 1.0
    for r in range(rows):
        h = usable_h * heights[r] / total
        y0, y1 = top - h, top
        for c in range(cols):
            n = r * cols + c + 1
            suffix = "" if n == 1 else str(n)
            x0 = c * (w + hspace)
            xa: dict[str, Any] = {"domain": [x0, x0 + w], "anchor": f"y{suffix}"}
            ya: dict[str, Any] = {"domain": [max(y0, 0.0), y1], "anchor": f"x{suffix}"}
            if n in images:
                xa.update(constrain="domain", showticklabels=False, showgrid=False)
                ya.update(autorange="reversed", scaleanchor=f"x{suffix}", constrain="domain",
                          showticklabels=False, showgrid=False)
            layout[f"xaxis{suffix}"] = xa
            layout[f"yaxis{suffix}"] = ya
            if n <= len(titles) and titles[n - 1]:
                layout["annotations"].append({
                    "text": titles[n - 1], "x": x0 + w / 2, "y": y1, "xref": "paper",
                    "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                    "showarrow": False, "font": {"size": 13}})
        top = y0 - vspace

    def cell(row: int, col: int) -> dict[str, str]:
        n = (row - 1) * cols + col
        suffix = "" if n == 1 else str(n)
        return {"xaxis": f"x{suffix}", "yaxis": f"y{suffix}"}

    return layout, cell


def plain_text(s: Any) -> str:
    """``s`` as text for Plotly: ``&``, ``<`` and ``>`` as entities.

    Plotly renders a subset of HTML (``<a href>``, ``<b>``, ``<br>``, ``<span style>``) in titles,
    legend names, tick labels and hover text; text a run carries (author, notes, layer and class
    names) goes through this, so it shows as written and cannot add a link.
    """
    return html.escape("" if s is None else str(s), quote=False)


def base_layout(fig: go.Figure, title: str = "", height: int = 360) -> go.Figure:
    """Common layout: title (as text: :func:`plain_text`), height, small margins. Width is left
    to the page.

    No template is set: the dashboard applies its theme, and assigning a Plotly template
    deep-copies it (about 0.2 s per figure).
    """
    fig.update_layout(title={"text": plain_text(title)}, height=height,
                      margin={"l": 40, "r": 20, "t": 60 if title else 30, "b": 40})
    return fig


def robust_signed_range(a: np.ndarray) -> float:
    """Largest finite absolute value (for a symmetric colour scale around 0); 1 when none."""
    f = a[np.isfinite(a)]
    m = float(np.abs(f).max()) if f.size else 0.0
    return m if m > 0 else 1.0
