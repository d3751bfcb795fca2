"""Figures of attention weights: one heatmap per head (small multiples), the image beside them.

Used by the Hook basics page's attention lesson (:func:`hooklab.studies.lessons.attention_lesson`)
and the Inspector's attention view (:func:`hooklab.cam.attention.class_token_attention`).

Example:
    >>> r = hooklab.studies.lessons.attention_lesson()
    >>> fig = head_maps(r.maps, image=r.image)     # the image, then head 1 … head 4
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from hooklab.charts.common import MAX_FACETS, base_layout, grid, heatmap, to_f32

__all__ = ["head_maps"]


def _rgb_u8(image: Any) -> np.ndarray:
    """A ``(H, W, 3)`` or ``(3, H, W)`` image in [0, 1] as uint8 ``(H, W, 3)``."""
    img = to_f32(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = np.transpose(img, (1, 2, 0))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) or (3, H, W) image, got shape {img.shape}")
    return np.round(np.clip(np.nan_to_num(img), 0.0, 1.0) * 255).astype(np.uint8)


def head_maps(maps: Any, image: Any = None, *, titles: Sequence[str] | None = None,
              title: str = "", cols: int | None = None, image_title: str = "input",
              height: int | None = None) -> go.Figure:
    """One heatmap per attention head on a shared colour scale, the input image first.

    Args:
        maps: ``(heads, gh, gw)`` attention of one query (the class token) over the patch grid.
        image: optional ``(H, W, 3)`` / ``(3, H, W)`` image in [0, 1], drawn as the first panel.
        titles: one per head (default ``"head 1"``, ``"head 2"``, …).
        title: the figure title.
        cols: panels per row (default up to 5).
        image_title: the image panel's title.
        height: figure height (default from the number of rows).

    Beyond :data:`~hooklab.charts.common.MAX_FACETS` heads, the first ones are drawn and the
    title says so. The colour scale runs from 0 to the largest weight of any head shown, so
    the heads can be compared.

    Raises:
        ValueError: ``maps`` is not 3-D, or a bad image.
    """
    m = to_f32(maps)
    if m.ndim != 3 or m.shape[0] == 0:
        raise ValueError(f"expected per-head maps (heads, gh, gw), got shape {m.shape}")
    heads = m.shape[0]
    shown = min(heads, MAX_FACETS)
    m = m[:shown]
    names = list(titles) if titles is not None else [f"head {i + 1}" for i in range(heads)]
    names = names[:shown]
    panels = shown + (image is not None)
    cols = max(1, min(cols or 5, panels))
    rows = -(-panels // cols)
    cells = [image_title] * (image is not None) + names
    layout, cell = grid(rows, cols, cells, images=range(1, panels + 1), hspace=0.02,
                        vspace=0.12 / rows)
    traces: list[Any] = []
    k = 0
    if image is not None:
        traces.append(go.Image(z=_rgb_u8(image), name=image_title, **cell(1, 1),
                               hovertemplate="x=%{x} y=%{y}<extra></extra>"))
        k = 1
    top = float(np.nanmax(m)) if np.isfinite(m).any() else 1.0
    for i in range(shown):
        r, c = divmod(k + i, cols)
        hm = heatmap(m[i], colorscale="Viridis", name=names[i], zmin=0.0,
                     zmax=top if top > 0 else 1.0, showscale=i == shown - 1)
        hm.update(cell(r + 1, c + 1))
        traces.append(hm)
    if shown < heads:
        title = f"{title} (first {shown} of {heads} heads)".strip()
    fig = go.Figure(data=traces, layout=layout)
    return base_layout(fig, title, height or 60 + 190 * rows)
