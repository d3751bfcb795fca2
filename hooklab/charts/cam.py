"""Grad-CAM figures: the seed's three panels, method grids, class galleries, metric curves.

Pure functions: numpy arrays in, ``go.Figure`` (or PNG / ``.npy`` bytes) out. Images are
``(H, W, 3)`` floats in [0, 1] (already denormalised) or ``(H, W)`` grey; CAMs are ``(H, W)``
floats in [0, 1]. Labels are passed in by the caller (the dashboard translates them).

The overlay follows the seed exactly::

    heatmap_colored = jet(uint8(255 * cam))[..., :3]
    overlay = 0.4 * heatmap_colored + 0.6 * image

Example:
    >>> fig = three_panels(image, cam, alpha=0.4, titles=("original", "Grad-CAM", "overlay"))
    >>> png = overlay_png(image, cam)          # bytes of a PNG file
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from hooklab.charts.common import grid, plain_text

# matplotlib's "jet" segment data (x, y) per channel; y0 == y1 at every break point.
_JET = {
    "r": ((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),
    "g": ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),
    "b": ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)),
}

#: Largest image side sent to the browser; larger images are strided down (and titled so).
MAX_SIDE = 256


def jet_lut(n: int = 256) -> np.ndarray:
    """The ``(n, 3)`` float32 lookup table of matplotlib's ``jet`` colormap.

    Entry ``i`` is the piecewise-linear jet colour at ``x = i / (n - 1)``; ``jet_lut()[128]`` is
    ``(0.490, 1.0, 0.478)``, matplotlib's ``cm.jet(0.5)``.
    """
    x = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(x, *_JET[c]) for c in "rgb"], axis=1).astype(np.float32)


_LUT = jet_lut()


def jet(cam: np.ndarray) -> np.ndarray:
    """Colour a map in [0, 1] with jet the way the seed does: ``lut[uint8(255 * cam)]``.

    Values are clipped to [0, 1]; NaN counts as 0. Returns ``cam.shape + (3,)`` float32.
    """
    c = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0)
    idx = (255.0 * np.clip(c, 0.0, 1.0)).astype(np.uint8)
    return _LUT[idx]


def _jet_colorscale() -> list[list]:
    """All 256 entries of :data:`_LUT` as Plotly colorscale stops at ``i / 255``.

    Each colour is the table entry as the overlay's uint8 pixels carry it (``round(255 * c)``),
    so a heatmap and an overlay of the same map show the same colours.
    """
    rgb = np.round(_LUT * 255.0).astype(np.uint8)
    n = len(rgb) - 1
    return [[i / n, f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(rgb.tolist())]


JET_COLORSCALE: list[list] = _jet_colorscale()
"""matplotlib's jet for Plotly heatmaps: the same 256-entry table :func:`jet` colours overlays
with (one stop per entry, no resampling)."""


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(3, H, W)`` -> float32 ``(H, W, 3)``."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.transpose(img, (1, 2, 0))
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (3, H, W) image, got {img.shape}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """``alpha * jet(cam) + (1 - alpha) * image`` (the seed: alpha = 0.4), ``(H, W, 3)`` in [0, 1].

    The CAM must have the image's height and width.
    """
    img = as_rgb(image)
    c = np.asarray(cam, dtype=np.float32)
    if c.shape != img.shape[:2]:
        raise ValueError(f"CAM shape {c.shape} does not match image size {img.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return np.clip(alpha * jet(c) + (1.0 - alpha) * img, 0.0, 1.0).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float image -> uint8 (rounded), the form ``go.Image`` and PNG files take."""
    return np.round(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def _stride(a: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, int]:
    step = max(1, -(-max(a.shape[0], a.shape[1]) // max_side))
    return (a[::step, ::step] if step > 1 else a), step


def overlay_png(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4, scale: int = 1) -> bytes:
    """The overlay as PNG file bytes; ``scale`` enlarges small images by pixel repetition."""
    rgb = to_uint8(overlay(image, cam, alpha))
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def cam_npy(cams: np.ndarray) -> bytes:
    """A CAM array as ``.npy`` file bytes (float32; ``np.load`` reads it without pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(cams, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _image_trace(img01: np.ndarray, name: str) -> go.Image:
    return go.Image(z=to_uint8(img01), name=name, hovertemplate="x=%{x} y=%{y}<extra></extra>")


def _heat_trace(cam: np.ndarray, name: str, showscale: bool) -> go.Heatmap:
    return go.Heatmap(z=np.asarray(cam, dtype=np.float32), colorscale=JET_COLORSCALE, zmin=0.0,
                      zmax=1.0, showscale=showscale, name=name,
                      hovertemplate="x=%{x} y=%{y} cam=%{z:.3f}<extra></extra>")


def _grid(rows: int, cols: int, titles: Sequence[str], hspace: float, vspace: float = 0.08
          ) -> tuple[dict, Callable[[int, int], dict]]:
    """:func:`hooklab.charts.common.grid` with every cell an image cell (square pixels, row 0
    on top, no axes) — a plain layout dict, far cheaper than ``make_subplots``."""
    layout, cell = grid(rows, cols, titles, hspace=hspace, vspace=vspace,
                        images=range(1, rows * cols + 1))
    for key, axis in layout.items():
        if key.startswith(("xaxis", "yaxis")):
            axis["visible"] = False
    return layout, cell


def three_panels(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4,
                 titles: Sequence[str] = ("Original", "Grad-CAM heatmap", "Overlay"),
                 height: int = 340) -> go.Figure:
    """The seed's figure: original image, jet heatmap, overlay ``alpha·jet + (1-alpha)·image``.

    Traces: ``data[0]`` ``go.Image`` (original), ``data[1]`` ``go.Heatmap`` (the CAM, z in [0, 1]),
    ``data[2]`` ``go.Image`` (overlay, uint8).
    """
    img = as_rgb(image)
    c = np.asarray(cam, dtype=np.float32)
    ov = overlay(img, c, alpha)
    img, step = _stride(img)
    c, ov = c[::step, ::step], ov[::step, ::step]
    titles = [plain_text(x) for x in titles]  # class names may come from a run: text, not HTML
    layout, cell = _grid(1, 3, titles, hspace=0.04)
    heat = _heat_trace(c, titles[1], showscale=True)
    # a thin horizontal scale under the heatmap, clear of the neighbouring panels
    heat.colorbar.update(orientation="h", x=0.5, xanchor="center", y=-0.02, yanchor="top",
                         len=0.3, thickness=8, tickvals=[0, 0.5, 1])
    fig = go.Figure([_image_trace(img, titles[0]).update(**cell(1, 1)),
                     heat.update(**cell(1, 2)),
                     _image_trace(ov, titles[2]).update(**cell(1, 3))], layout)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 40},
                      meta={"downsampled": step})
    return fig


def method_grid(image: np.ndarray, cams: Mapping[str, np.ndarray], alpha: float = 0.4,
                show_overlay: bool = True, height: int = 300) -> go.Figure:
    """One column per CAM method: overlays (``go.Image``) or raw heatmaps (``go.Heatmap``).

    ``cams`` maps a method name to its ``(H, W)`` map; column order follows the mapping.
    """
    if not cams:
        raise ValueError("no CAM maps to show")
    img = as_rgb(image)
    names = list(cams)
    layout, cell = _grid(1, len(names), names, hspace=0.02)
    traces = []
    step = 1
    for i, name in enumerate(names, start=1):
        c = np.asarray(cams[name], dtype=np.float32)
        if show_overlay:
            ov, step = _stride(overlay(img, c, alpha))
            traces.append(_image_trace(ov, name).update(**cell(1, i)))
        else:
            cs, step = _stride(c)
            traces.append(_heat_trace(cs, name, showscale=i == len(names)).update(**cell(1, i)))
    fig = go.Figure(traces, layout)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      meta={"downsampled": step})
    return fig


def gallery(images: Sequence[np.ndarray], cams: Sequence[np.ndarray], titles: Sequence[str],
            alpha: float = 0.4, cols: int = 5, tile: int = 170) -> go.Figure:
    """A grid of overlays, one per (image, CAM, title) — e.g. one per class.

    Rows are filled left to right; ``len(fig.data) == len(images)``.
    """
    if not (len(images) == len(cams) == len(titles)):
        raise ValueError("images, cams and titles must have the same length")
    if not images:
        raise ValueError("the gallery is empty")
    cols = max(1, min(cols, len(images)))
    rows = -(-len(images) // cols)
    layout, cell = _grid(rows, cols, titles, hspace=0.02, vspace=0.3 / (rows + 2))
    traces = []
    for k, (img, c) in enumerate(zip(images, cams, strict=True)):
        ov, _ = _stride(overlay(img, c, alpha), max_side=128)
        traces.append(_image_trace(ov, titles[k]).update(**cell(k // cols + 1, k % cols + 1)))
    fig = go.Figure(traces, layout)
    fig.update_layout(height=tile * rows + 40, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def rows_grid(images: Sequence[np.ndarray], rows: Mapping[str, Sequence[np.ndarray]],
              col_titles: Sequence[str] | None = None, alpha: float = 0.4,
              tile: int = 150) -> go.Figure:
    """Overlays of the same images under several models, one row per model.

    Used by the bias experiment: ``rows = {"biased": cams_a, "rebalanced": cams_b}``. The row
    name is written sideways left of its row.
    """
    names = list(rows)
    if not names or not images:
        raise ValueError("nothing to show")
    for n in names:
        if len(rows[n]) != len(images):
            raise ValueError(f"row {n!r} has {len(rows[n])} maps for {len(images)} images")
    ncols = len(images)
    titles = list(col_titles or [""] * ncols)
    layout, cell = _grid(len(names), ncols, titles, hspace=0.01, vspace=0.04)
    traces = []
    for r, n in enumerate(names):
        for c, (img, cam) in enumerate(zip(images, rows[n], strict=True)):
            ov, _ = _stride(overlay(img, cam, alpha), max_side=128)
            traces.append(_image_trace(ov, f"{n}: {c}").update(**cell(r + 1, c + 1)))
        dom = layout["yaxis" if r == 0 else f"yaxis{r * ncols + 1}"]["domain"]
        layout["annotations"].append({
            "text": f"<b>{n}</b>", "textangle": -90, "x": 0, "xanchor": "right",
            "y": (dom[0] + dom[1]) / 2, "yanchor": "middle", "xref": "paper", "yref": "paper",
            "showarrow": False, "xshift": -6})
    fig = go.Figure(traces, layout)
    fig.update_layout(height=tile * len(names) + 40, margin={"l": 30, "r": 10, "t": 40, "b": 10})
    return fig


def auc(fractions: np.ndarray, scores: np.ndarray) -> float:
    """Area under a curve sampled at ``fractions`` (trapezoid rule)."""
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def deletion_insertion(fractions: np.ndarray, deletion: np.ndarray, insertion: np.ndarray,
                       names: Sequence[str] = ("Deletion", "Insertion"),
                       x_title: str = "fraction of pixels", y_title: str = "class score",
                       height: int = 320) -> go.Figure:
    """Deletion and insertion curves (score of the target class as the most salient pixels are
    removed / added). Legend entries carry the AUC: low deletion AUC and high insertion AUC mean
    a faithful map.
    """
    x = np.asarray(fractions, dtype=np.float32)
    fig = go.Figure()
    for name, y, colour in ((names[0], deletion, "#c0392b"), (names[1], insertion, "#2471a3")):
        y = np.asarray(y, dtype=np.float32)
        if y.shape != x.shape:
            raise ValueError(f"{name} curve has {y.shape} points for {x.shape} fractions")
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"{name} (AUC {auc(x, y):.3f})",
                                 line=dict(color=colour), fill="tozeroy"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title=x_title, yaxis_title=y_title,
                      legend=dict(orientation="h", y=1.12))
    return fig


def metric_bars(values: Mapping[str, Mapping[str, float]], height: int = 300) -> go.Figure:
    """Grouped bars: ``values[metric][method] -> number`` (e.g. AD, IC per CAM method)."""
    fig = go.Figure()
    for metric, per_method in values.items():
        fig.add_trace(go.Bar(name=metric, x=list(per_method),
                             y=np.asarray(list(per_method.values()), dtype=np.float32)))
    fig.update_layout(barmode="group", height=height, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def topk_bar(labels: Sequence[str], probs: Sequence[float], highlight: int | None = None,
             x_title: str = "probability", height: int = 240) -> go.Figure:
    """Horizontal bars of the top-k class probabilities, best on top; ``highlight`` marks the
    bar (index into ``labels``) whose CAM is shown."""
    p = np.asarray(probs, dtype=np.float32)
    colours = ["#c0392b" if i == highlight else "#95a5a6" for i in range(len(p))]
    fig = go.Figure(go.Bar(x=p, y=list(labels), orientation="h", marker_color=colours,
                           text=[f"{v:.1%}" for v in p], textposition="auto"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), xaxis_title=x_title,
                      yaxis=dict(autorange="reversed"), xaxis=dict(range=[0, 1]))
    return fig


def topk(logits: np.ndarray, class_names: Sequence[str], k: int = 5
         ) -> tuple[list[str], np.ndarray, list[int]]:
    """Top-``k`` classes of one logit vector: ``(names, softmax probabilities, indices)``, best
    first. ``softmax(z)_i = exp(z_i - max z) / Σ_j exp(z_j - max z)``."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    p = np.exp(z - z.max())
    p /= p.sum()
    k = max(1, min(int(k), z.size))
    idx = [int(i) for i in np.argsort(-p, kind="stable")[:k]]
    names = [str(class_names[i]) if i < len(class_names) else str(i) for i in idx]
    return names, p[idx].astype(np.float32), idx
