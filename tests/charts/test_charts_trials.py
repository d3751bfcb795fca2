"""Edit-sweep figures and table carry the data given: the trials table keeps every number and
names the baseline, the accuracy chart has one point per finished trial per seed, the ratio
chart one line per trial per layer panel with the ratios as given (log y, a line at 1)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hooklab.charts import trials as T
from hooklab.studies.sweep import RATIO_COLUMNS, TRIAL_COLUMNS


def _trials() -> pd.DataFrame:
    rows = [(0, "", 0, "r0", 0.75, 0.9, "finished", ""),
            (1, "", 1, "r1", 0.5, 1.1, "finished", ""),
            (2, "conv2=scale(0.5)", 0, "r2", 0.625, 0.95, "finished", ""),
            (3, "conv2=scale(0.5)", 1, "r3", math.nan, math.nan, "failed", "boom <b>"),
            (4, "<a href=x>", 0, "r4", 0.25, 2.0, "finished", "")]
    return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))


def _ratios() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for trial, config, seed in ((2, "conv2=scale(0.5)", 0), (4, "<a href=x>", 0)):
        for layer in ("conv1", "conv2", "fc"):
            for step in range(6):
                rows.append((trial, config, seed, layer, step, float(rng.uniform(0.1, 3))))
    df = pd.DataFrame(rows, columns=list(RATIO_COLUMNS))
    df.loc[5, "ratio"] = math.nan  # a missing baseline norm
    df.loc[6, "ratio"] = 0.0       # not drawable on a log axis
    return df


def test_trials_table_keeps_the_numbers_and_names_the_baseline():
    t = _trials()
    out = T.trials_table(t)
    assert list(out.columns) == list(T.TABLE_COLUMNS)
    assert list(out["config"]) == ["no edit", "no edit", "conv2=scale(0.5)",
                                   "conv2=scale(0.5)", "<a href=x>"]
    np.testing.assert_array_equal(out["final_accuracy"].to_numpy(),
                                  t["final_accuracy"].to_numpy())
    assert list(out["run_id"]) == list(t["run_id"]) and list(out["status"]) == list(t["status"])
    assert list(t["config"])[0] == ""  # the input is not changed


def test_final_accuracy_one_point_per_finished_trial_per_seed():
    fig = T.final_accuracy(_trials())
    assert [tr.name for tr in fig.data] == ["seed 0", "seed 1"]
    s0, s1 = fig.data
    assert list(s0.x) == ["no edit", "conv2=scale(0.5)", "&lt;a href=x&gt;"]
    np.testing.assert_array_equal(np.asarray(s0.y), np.float32([0.75, 0.625, 0.25]))
    assert list(s1.x) == ["no edit"]  # the failed trial has no accuracy: no point
    np.testing.assert_array_equal(np.asarray(s1.y), np.float32([0.5]))
    assert np.asarray(s0.y).dtype == np.float32
    assert list(fig.layout.xaxis.categoryarray) == ["no edit", "conv2=scale(0.5)",
                                                    "&lt;a href=x&gt;"]
    assert list(s0.text)[1] == "t2 conv2=scale(0.5) · seed 0"


def test_ratio_lines_one_panel_per_layer_one_line_per_trial():
    r = _ratios()
    fig = T.ratio_lines(r)
    lines = [tr for tr in fig.data if isinstance(tr, go.Scatter)]
    assert len(lines) == 3 * 2
    assert [a.text for a in fig.layout.annotations] == ["conv1", "conv2", "fc"]
    for k, layer in enumerate(("conv1", "conv2", "fc")):
        suffix = "" if k == 0 else str(k + 1)
        assert fig.layout[f"yaxis{suffix}"].type == "log"
        for tr, trial in zip(lines[2 * k:2 * k + 2], (2, 4), strict=True):
            want = r[(r["layer"] == layer) & (r["trial"] == trial)].sort_values("step")
            assert tr.yaxis == f"y{suffix}"
            np.testing.assert_array_equal(np.asarray(tr.x), want["step"].to_numpy())
            expect = want["ratio"].to_numpy()
            expect = np.where(np.isfinite(expect) & (expect > 0), expect, np.nan)
            np.testing.assert_allclose(np.asarray(tr.y, dtype=np.float64), expect, rtol=1e-6)
    assert np.isnan(np.asarray(lines[0].y)[5]) and np.isnan(np.asarray(lines[2].y)[0])
    assert lines[0].name == "t2 conv2=scale(0.5) · seed 0"
    assert lines[1].name == "t4 &lt;a href=x&gt; · seed 0"  # run text cannot add a link
    assert [tr.showlegend for tr in lines] == [True, True] + [False] * 4
    assert [(s.yref, s.y0) for s in fig.layout.shapes] == [("y", 1.0), ("y2", 1.0), ("y3", 1.0)]


def test_ratio_lines_downsample_and_say_so():
    r = _ratios()
    fig = T.ratio_lines(r, max_values=len(r) // 2)
    assert "every 2th" in fig.layout.title.text
    assert list(fig.data[0].x) == [0, 2, 4]
    assert "every" not in T.ratio_lines(r).layout.title.text
