"""Figures for the "Hook basics" page: the seed's lessons (:mod:`hooklab.studies.lessons`).

Example:
    >>> r = hooklab.studies.lessons.forward_hook_lesson()
    >>> fig = forward_panels(r.input_map, r.channel_maps)   # the seed's three grayscale panels
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hooklab.charts.common import AB_COLORS, base_layout, grid, heatmap, to_f32


def forward_panels(input_map: Any, channel_maps: Sequence[Any],
                   titles: Sequence[str] | None = None, height: int = 320) -> go.Figure:
    """The seed's three grayscale panels: the input, channel 1 and channel 2 of the conv output.

    Args:
        input_map: the (H, W) input image.
        channel_maps: one (H, W) map per output channel.
        titles: panel titles (default "input", "channel 1", "channel 2", ...).
    """
    maps = [to_f32(input_map), *(to_f32(m) for m in channel_maps)]
    if titles is None:
        titles = ["input", *(f"channel {i + 1}" for i in range(len(channel_maps)))]
    layout, cell = grid(1, len(maps), list(titles), images=range(1, len(maps) + 1))
    traces = []
    for i, (m, t) in enumerate(zip(maps, titles, strict=True)):
        hm = heatmap(m, name=t)
        hm.update(cell(1, i + 1))
        traces.append(hm)
    return base_layout(go.Figure(data=traces, layout=layout), height=height)


def tensor_hook_bars(dz_dy: float, k: float, dy_dx: float, x_grad: float,
                     x_grad_without_hook: float, height: int = 320) -> go.Figure:
    """The chain rule of the tensor hook lesson as bars, with the live numbers.

    Bars: dz/dy seen by the hook (48), what it returned (48 k), dy/dx (4), x.grad with the hook
    (192 k) and without it (192).
    """
    labels = ["dz/dy (hook sees)", "k · dz/dy (hook returns)", "dy/dx", "x.grad (with hook)",
              "x.grad (no hook)"]
    values = np.array([dz_dy, k * dz_dy, dy_dx, x_grad, x_grad_without_hook], dtype=np.float32)
    colors = ["#7f8c8d", "#e67e22", "#7f8c8d", "#c0392b", "#2980b9"]
    fig = go.Figure(go.Bar(x=labels, y=values, marker_color=colors,
                           text=[f"{v:g}" for v in values.tolist()], textposition="outside",
                           name="chain rule"))
    fig.update_yaxes(title_text="value")
    return base_layout(fig, f"x.grad = {dz_dy:g} · {k:g} · {dy_dx:g} = {x_grad:g}", height)


def multi_op_bars(deprecated: Any, full: Any, reference: Any,
                  labels: Sequence[str] = ("deprecated register_backward_hook",
                                           "register_full_backward_hook", "torch.autograd.grad"),
                  height: int = 300) -> go.Figure:
    """grad_input[0] from the deprecated and the full hook beside autograd's dL/dx (flattened).

    The deprecated value may have another shape than the reference; each is drawn over its own
    element index.
    """
    fig = go.Figure()
    for vals, lab, color in zip((deprecated, full, reference), labels,
                                (AB_COLORS[1], AB_COLORS[0], "#7f8c8d"), strict=True):
        v = to_f32(vals).reshape(-1)
        fig.add_trace(go.Bar(x=np.arange(v.size, dtype=np.float32), y=v, name=lab,
                             marker_color=color))
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="element")
    return base_layout(fig, "grad_input[0]: deprecated vs full vs autograd", height)


def backward_kinds_table(rows: Sequence[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Table data for "what each backward hook kind receives" (from ``lesson.table()``)."""
    df = pd.DataFrame(rows).copy()
    if "matches autograd" in df:
        df["matches autograd"] = df["matches autograd"].map({True: "✓", False: "✗"})
    return df.reset_index(drop=True)


def replace_bars(logits: Any, replaced: Any, expected: Any,
                 labels: Sequence[str] = ("no hook", "forward hook returns zeros",
                                          "fc.bias"), height: int = 300) -> go.Figure:
    """Logits without the hook, with the replacing hook, and the value they should equal."""
    fig = go.Figure()
    for vals, lab, color in zip((logits, replaced, expected), labels,
                                (AB_COLORS[0], AB_COLORS[1], "#7f8c8d"), strict=True):
        v = to_f32(vals).reshape(-1)
        fig.add_trace(go.Bar(x=np.arange(v.size, dtype=np.float32), y=v, name=lab,
                             marker_color=color))
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="class")
    return base_layout(fig, "model output (logits)", height)
