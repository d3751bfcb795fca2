"""CAMs over training as figures: an animated overlay row with a step slider, and the bias
experiment's location curves (where the maxima lie, step by step).

Pure functions: numpy in, ``go.Figure`` out. Images ``(H, W, 3)`` in [0, 1]; maps
``(S, N, H, W)`` in [0, 1] (S steps, N images). Labels come from the caller.

Example:
    >>> fig = training_animation(images, cams.maps.numpy(), cams.steps, titles=names)
    >>> len(fig.frames) == len(cams.steps)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from hooklab.charts.cam import _grid, _image_trace, _stride, overlay
from hooklab.charts.common import plain_text

__all__ = ["training_animation", "location_curves"]


def _frame_traces(images: Sequence[np.ndarray], maps: np.ndarray, alpha: float,
                  cell, step: int) -> list[go.Image]:
    out = []
    for c, (img, cam) in enumerate(zip(images, maps, strict=True)):
        ov, _ = _stride(overlay(img, cam, alpha), max_side=128)
        out.append(_image_trace(ov, f"step {step}: {c}").update(**cell(1, c + 1)))
    return out


def training_animation(images: Sequence[np.ndarray], maps: np.ndarray, steps: Sequence[int],
                       titles: Sequence[str] | None = None, *, alpha: float = 0.4,
                       step_label: str = "step", captions: Sequence[str] | None = None,
                       play_label: str = "▶", pause_label: str = "❚❚", tile: int = 150,
                       frame_ms: int = 700) -> go.Figure:
    """The same images' CAM overlays at every step: one frame per step, a slider and play.

    Args:
        images: ``N`` images ``(H, W, 3)`` in [0, 1].
        maps: ``(S, N, H, W)`` maps in [0, 1], ``S = len(steps)``.
        steps: the training step of each frame.
        titles: one title per image (e.g. class and marker).
        alpha: overlay opacity (the seed: 0.4).
        step_label: the slider's prefix (``"step"``, translated by the caller).
        captions: one line per frame shown as the figure title (e.g. the accuracy then).
        play_label, pause_label: the buttons' text.
        tile: pixel height of the row.
        frame_ms: milliseconds per frame when playing.

    Returns:
        A figure whose ``data`` is the first frame, ``frames[k].name == str(steps[k])``; the
        slider's steps animate to each frame.

    Raises:
        ValueError: shapes that do not fit together, or no images.
    """
    maps = np.asarray(maps, dtype=np.float32)
    steps = [int(s) for s in steps]
    if maps.ndim != 4 or maps.shape[0] != len(steps) or maps.shape[1] != len(images):
        raise ValueError(f"maps {maps.shape} must be (steps={len(steps)}, images={len(images)}, "
                         "H, W)")
    if not images:
        raise ValueError("nothing to show")
    if captions is not None and len(captions) != len(steps):
        raise ValueError(f"{len(captions)} captions for {len(steps)} steps")
    n = len(images)
    layout, cell = _grid(1, n, [plain_text(s) for s in (titles or [""] * n)], hspace=0.01)
    frames = []
    for k, step in enumerate(steps):
        frame_layout = ({"title": {"text": plain_text(captions[k])}} if captions is not None
                        else {})
        frames.append(go.Frame(data=_frame_traces(images, maps[k], alpha, cell, step),
                               name=str(step), layout=frame_layout))
    fig = go.Figure(data=frames[0].data, layout=layout, frames=frames)
    slider_steps = [{"label": str(s), "method": "animate",
                     "args": [[str(s)], {"mode": "immediate", "frame": {"duration": 0,
                                                                         "redraw": True},
                                         "transition": {"duration": 0}}]} for s in steps]
    fig.update_layout(
        height=tile + 150, margin={"l": 10, "r": 10, "t": 60, "b": 10},
        title={"text": plain_text(captions[0]) if captions is not None else ""},
        sliders=[{"active": 0, "steps": slider_steps, "x": 0.08, "len": 0.92, "y": 0,
                  "currentvalue": {"prefix": f"{plain_text(step_label)} "},
                  "pad": {"t": 10}}],
        updatemenus=[{"type": "buttons", "showactive": False, "x": 0, "y": 0,
                      "xanchor": "left", "yanchor": "top", "pad": {"t": 10},
                      "buttons": [
                          {"label": play_label, "method": "animate",
                           "args": [None, {"frame": {"duration": frame_ms, "redraw": True},
                                           "fromcurrent": True,
                                           "transition": {"duration": 0}}]},
                          {"label": pause_label, "method": "animate",
                           "args": [[None], {"mode": "immediate",
                                             "frame": {"duration": 0, "redraw": False}}]}]}])
    return fig


def location_curves(steps: Sequence[int], series: Mapping[str, Sequence[float]], *,
                    x_title: str = "step", y_title: str = "fraction",
                    height: int = 300) -> go.Figure:
    """Lines over training steps (values in [0, 1]), e.g. ``{"max on the marker": on_cue,
    "accuracy": acc}``; one trace per series, in order."""
    xs = [int(s) for s in steps]
    traces = []
    for name, ys in series.items():
        ys = [float(v) for v in ys]
        if len(ys) != len(xs):
            raise ValueError(f"series {name!r} has {len(ys)} values for {len(xs)} steps")
        traces.append(go.Scatter(x=xs, y=ys, mode="lines+markers", name=plain_text(name)))
    fig = go.Figure(traces)
    fig.update_layout(height=height, margin={"l": 50, "r": 10, "t": 20, "b": 40},
                      xaxis={"title": {"text": plain_text(x_title)}},
                      yaxis={"title": {"text": plain_text(y_title)}, "range": [0, 1.02]},
                      legend={"orientation": "h", "y": 1.12})
    return fig
