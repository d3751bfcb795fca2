"""Figures of the predict-then-reveal exercises: an image to click on, the revealed CAM.

Example:
    >>> fig = click_image(datasets.to_display(x))          # st.plotly_chart(on_select="rerun")
    >>> fig = cam_reveal(image, cam_map, answer=(12, 20), peak=(31, 10))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from hooklab.charts.cam import overlay

__all__ = ["CLICK_TRACE", "cam_reveal", "click_image", "clicked_pixel"]

#: Name of the invisible scatter trace whose points a click selects.
CLICK_TRACE = "pixels"


def _u8(img01: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(img01, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)


def _pixel_grid(h: int, w: int) -> go.Scatter:
    rows, cols = np.mgrid[0:h, 0:w]
    return go.Scatter(x=cols.ravel().astype(np.float32), y=rows.ravel().astype(np.float32),
                      mode="markers", name=CLICK_TRACE, showlegend=False,
                      marker={"size": 12, "opacity": 0.01, "color": "white"},
                      hovertemplate="row %{y}, col %{x}<extra></extra>")


def _layout(fig: go.Figure, h: int, w: int, title: str, height: int) -> go.Figure:
    fig.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      clickmode="event+select", dragmode=False)
    fig.update_xaxes(range=[-0.5, w - 0.5], showgrid=False, zeroline=False, visible=False)
    fig.update_yaxes(range=[h - 0.5, -0.5], showgrid=False, zeroline=False, visible=False,
                     scaleanchor="x")
    return fig


def click_image(img01: np.ndarray, title: str = "", height: int = 360) -> go.Figure:
    """The ``(H, W, 3)`` image in [0, 1], with one invisible point per pixel to click on."""
    img = np.asarray(img01)
    h, w = img.shape[:2]
    fig = go.Figure([go.Image(z=_u8(img), hoverinfo="skip"), _pixel_grid(h, w)])
    return _layout(fig, h, w, title, height)


def clicked_pixel(selection: object) -> tuple[int, int] | None:
    """``(row, col)`` of the first selected point of :func:`click_image` (Streamlit's
    ``st.plotly_chart(on_select=...)`` return value), or None."""
    try:
        points = selection["selection"]["points"]  # type: ignore[index]
    except (TypeError, KeyError):
        return None
    for p in points or []:
        if "x" in p and "y" in p:
            return int(round(float(p["y"]))), int(round(float(p["x"])))
    return None


def cam_reveal(img01: np.ndarray, cam: np.ndarray, answer: Sequence[int] | None,
               peak: Sequence[int], title: str = "", labels: tuple[str, str] = ("your point",
                                                                                 "peak"),
               height: int = 360) -> go.Figure:
    """The CAM over the image (0.4 jet + 0.6 image, as the seed), the answer and the peak."""
    img = overlay(np.asarray(img01, dtype=np.float32), np.asarray(cam, dtype=np.float32))
    h, w = img.shape[:2]
    traces: list[go.BaseTraceType] = [go.Image(z=_u8(img), hoverinfo="skip")]
    traces.append(go.Scatter(x=[float(peak[1])], y=[float(peak[0])], mode="markers",
                             name=labels[1], marker={"symbol": "star", "size": 16,
                                                     "color": "white",
                                                     "line": {"color": "black", "width": 1}}))
    if answer is not None:
        traces.append(go.Scatter(x=[float(answer[1])], y=[float(answer[0])], mode="markers",
                                 name=labels[0], marker={"symbol": "x", "size": 14,
                                                         "color": "#00e5ff",
                                                         "line": {"color": "black",
                                                                  "width": 1}}))
    fig = go.Figure(traces)
    fig.update_layout(legend={"orientation": "h", "y": -0.02})
    return _layout(fig, h, w, title, height)
