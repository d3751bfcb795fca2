"""Evaluation tables and figure: directions for every metric column, the summary's numbers kept,
one box per method × layer per metric carrying exactly the per-image values given."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hooklab.charts import evaluation as E
from hooklab.studies.evaluation import METRIC_COLUMNS


def _per_image() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(5):
        for method, layer in (("gradcam", "conv3"), ("scorecam", "conv3"), ("gradcam", "<b>x")):
            rows.append({"index": i, "label": i % 3, "target": i % 3, "predicted": i % 3,
                         "method": method, "layer": layer,
                         "deletion_auc": float(rng.random()), "insertion_auc": float(rng.random()),
                         "pointing": float(rng.integers(0, 2))})
    return pd.DataFrame(rows)


def test_every_metric_column_has_a_direction():
    assert set(METRIC_COLUMNS) <= set(E.BETTER)
    assert E.BETTER["deletion_auc"] == "lower" and E.BETTER["insertion_auc"] == "higher"
    assert E.BETTER["average_drop"] == "lower" and E.BETTER["road_morf"] == "lower"
    assert set(E.BETTER.values()) == {"higher", "lower"}


def test_summary_table_keeps_the_numbers_and_says_the_direction():
    summary = pd.DataFrame({"method": ["gradcam"] * 3, "layer": ["conv3"] * 3,
                            "metric": ["deletion_auc", "insertion_auc", "mystery"],
                            "n": [8, 8, 1], "mean": [0.25, 0.9, 0.5],
                            "sd": [0.125, 0.0625, math.nan]})
    out = E.summary_table(summary)
    assert list(out.columns) == ["method", "layer", "metric", "better", "n", "mean", "sd",
                                 "mean ± sd"]
    assert list(out["better"]) == ["lower", "higher", ""]
    assert list(out["mean"]) == [0.25, 0.9, 0.5] and list(out["n"]) == [8, 8, 1]
    assert list(out["mean ± sd"]) == ["0.25 ± 0.125", "0.9 ± 0.0625", "0.5"]
    assert "better" not in summary.columns  # the input is not changed


def test_box_per_method_layer_per_metric_carries_the_values():
    df = _per_image()
    fig = E.per_image_box(df, ["deletion_auc", "insertion_auc", "pointing", "absent"])
    assert isinstance(fig, go.Figure)
    boxes = [tr for tr in fig.data if isinstance(tr, go.Box)]
    assert len(boxes) == 3 * 3  # 3 metrics (the absent one skipped) x 3 method-layer pairs
    names = {tr.name for tr in boxes}
    assert names == {"gradcam · conv3", "scorecam · conv3", "gradcam · &lt;b&gt;x"}
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["deletion_auc (lower is better)", "insertion_auc (higher is better)",
                      "pointing (higher is better)"]
    axes = []
    for k, col in enumerate(["deletion_auc", "insertion_auc", "pointing"]):
        group = boxes[3 * k:3 * k + 3]
        axes.append({tr.yaxis for tr in group})
        for tr, (m, lay) in zip(group, [("gradcam", "conv3"), ("scorecam", "conv3"),
                                        ("gradcam", "<b>x")], strict=True):
            want = df[(df["method"] == m) & (df["layer"] == lay)]
            assert np.asarray(tr.y).dtype == np.float32
            np.testing.assert_allclose(np.asarray(tr.y), want[col].to_numpy(), rtol=1e-6)
            assert list(tr.text) == [f"image {i}" for i in want["index"]]
    assert all(len(a) == 1 for a in axes) and len(set().union(*axes)) == 3  # one panel each
    assert sum(bool(tr.showlegend) for tr in boxes) == 3  # one legend entry per pair


def test_titles_can_be_given():
    fig = E.per_image_box(_per_image(), ["deletion_auc"], titles={"deletion_auc": "Löschung"})
    assert [a.text for a in fig.layout.annotations] == ["Löschung"]
