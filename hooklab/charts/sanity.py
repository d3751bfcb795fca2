"""The sanity strip (Adebayo et al. 2018) as one Plotly figure: data in, figure out.

One row of maps for one image: the original map, then one map per step of the
model-parameter randomisation cascade (the layer named above it was re-initialised, with every
layer above it), each with its Spearman correlation and SSIM to the original map written under
it; beside them, when given, the data-randomisation test (the map of the model trained on the
true labels and of the one trained on shuffled labels, with their similarity).

Example:
    >>> fig = sanity_strip(hooklab.sanity.mprt(model, x), index=0,
    ...                    data=hooklab.sanity.data_randomisation(x))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from hooklab.charts.common import base_layout, grid, heatmap, plain_text

__all__ = ["sanity_strip"]


def _scores(rho: float, ssim: float) -> str:
    fmt = lambda v: "n/a" if v != v else f"{v:.2f}"  # noqa: E731 - NaN: undefined
    return f"ρ {fmt(rho)} · SSIM {fmt(ssim)}"


def sanity_strip(res: Any, index: int = 0, *, data: Any = None, colorscale: str = "Jet",
                 height: int = 260) -> go.Figure:
    """The cascade's maps for map ``index`` of an :class:`hooklab.cam.sanity.MPRTResult`.

    Args:
        res: the cascade (:func:`hooklab.cam.sanity.mprt`).
        index: which map (image) to show.
        data: a :class:`hooklab.cam.sanity.DataRandomisationResult` to show beside the strip
            (its map ``index``), or ``None``.
        colorscale: the maps' colours (values in [0, 1]).
        height: figure height in px.

    Raises:
        IndexError: ``index`` is not a map of ``res``.
    """
    n = int(res.maps.shape[1])
    if not 0 <= index < n:
        raise IndexError(f"map {index} of {n}: pick 0..{n - 1}")
    labels = list(res.labels)
    cols = len(labels) + (2 if data is not None else 0)
    titles = [plain_text(x) for x in labels]
    if data is not None:
        titles += ["true labels", "shuffled labels"]
    layout, cell = grid(1, cols, titles, hspace=0.012, images=list(range(1, cols + 1)))
    traces = []
    notes = []
    maps = res.maps[:, index].detach().float().cpu().numpy().astype(np.float32)
    for k in range(len(labels)):
        traces.append(heatmap(maps[k], colorscale=colorscale, zmin=0, zmax=1,
                              name=plain_text(labels[k]), **{}).update(**cell(1, k + 1)))
        notes.append((k + 1, "" if k == 0 else _scores(float(res.spearman[k, index]),
                                                        float(res.ssim[k, index]))))
    if data is not None:
        pair = (data.trained[index], data.shuffled[index])
        for j, m in enumerate(pair):
            col = len(labels) + 1 + j
            traces.append(heatmap(m.detach().float().cpu().numpy().astype(np.float32),
                                  colorscale=colorscale, zmin=0, zmax=1,
                                  name=titles[col - 1]).update(**cell(1, col)))
        notes.append((len(labels) + 2, _scores(float(data.spearman[index]),
                                               float(data.ssim[index]))))
    for c, text in notes:
        if not text:
            continue
        suffix = "" if c == 1 else str(c)
        x0, x1 = layout[f"xaxis{suffix}"]["domain"]
        layout["annotations"].append({"text": text, "x": (x0 + x1) / 2, "y": 0.0,
                                      "xref": "paper", "yref": "paper", "xanchor": "center",
                                      "yanchor": "top", "showarrow": False,
                                      "font": {"size": 11}})
    fig = go.Figure(traces, layout)
    verdict = "falls apart (passes)" if res.passed else "stays alike (fails)"
    return base_layout(fig, f"{res.title} at {res.layer}: model-parameter randomisation, "
                            f"{verdict}", height=height)
