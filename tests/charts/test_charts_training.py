"""Training figures (hooklab.charts.training) and their tables (hooklab.studies.training_views).

The figures' data are compared with the input tables computed independently here (plain pandas
/ numpy on the same rows), on synthetic watch-run tables of exactly the watch's columns and on a
real recording.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import hooklab
from hooklab.charts import training as C
from hooklab.charts.common import MAX_VALUES, plain_text
from hooklab.core.trace import EVENT_COLUMNS
from hooklab.models.zoo import SimpleModel
from hooklab.studies import training_views as V
from tests.conftest import hook_counts

LAYERS = ("conv1", "conv2", "conv3", "fc")


def make_events(steps, layers=LAYERS, seed: int = 0, scale: dict | None = None,
                roles=("output", "grad_output", "param_grad")) -> pd.DataFrame:
    """A synthetic watch-run events table: per step the outputs in forward order, the output
    gradients in backward order, then each layer's ``weight`` and ``bias`` gradients. Norms are
    random (seeded); ``scale`` multiplies a layer's gradient norms (a run B under an edit)."""
    rng = np.random.default_rng(seed)
    scale = scale or {}
    rows = []
    for step in steps:
        seq = 0
        order = []
        if "output" in roles:
            order += [(layer, "output", "0") for layer in layers]
        if "grad_output" in roles:
            order += [(layer, "grad_output", "0") for layer in reversed(layers)]
        if "param_grad" in roles:
            order += [(layer, "param_grad", p) for layer in reversed(layers)
                      for p in ("weight", "bias")]
        for layer, role, index in order:
            norm = float(rng.uniform(0.01, 10.0))
            if role != "output":
                norm *= scale.get(layer, 1.0)
            rows.append({"seq": seq, "step": step, "layer": layer, "role": role,
                         "index": index, "norm": norm})
            seq += 1
    ev = pd.DataFrame(rows)
    for col in EVENT_COLUMNS:
        if col not in ev:
            ev[col] = {"nan_count": 0, "inf_count": 0, "call": 0, "numel": 4}.get(col, 0.0) \
                if col in ("nan_count", "inf_count", "call", "numel", "mean", "std", "min",
                           "max", "zero_frac") else ""
    ev["phase"] = np.where(ev["role"] == "output", "forward", "backward")
    return ev[list(EVENT_COLUMNS)]


def make_scalars(steps, layers=LAYERS, params=("conv1.weight", "fc.weight"), seed: int = 1,
                 every: int = 1) -> pd.DataFrame:
    """A synthetic scalars table: loss/acc every step, update ratios and dead fractions on
    recorded steps (every ``every``th)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in steps:
        rows += [{"step": s, "name": "loss", "value": 2.0 / (1 + s) + rng.uniform(0, .01)},
                 {"step": s, "name": "acc", "value": min(1.0, s / 50)}]
        if s % every == 0:
            rows += [{"step": s, "name": f"update_ratio/{p}", "value": 10 ** rng.uniform(-4, -2)}
                     for p in params]
            rows += [{"step": s, "name": f"dead_frac/{x}", "value": rng.uniform(0, 1)}
                     for x in layers]
    df = pd.DataFrame(rows)
    return df.astype({"step": "int64", "name": "str", "value": "float64"})


def pivot_norms(ev: pd.DataFrame, role: str) -> pd.DataFrame:
    """Independent reference: sqrt of summed squared norms per (layer, step)."""
    sel = ev[ev["role"] == role]
    ref = {}
    for (layer, step), grp in sel.groupby(["layer", "step"]):
        ref.setdefault(layer, {})[step] = math.sqrt(sum(v * v for v in grp["norm"]))
    return pd.DataFrame(ref).T


# ----------------------------------------------------------------------------------------------
# Heatmap
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["grad_output", "param_grad", "output"])
def test_heatmap_z_is_log10_of_the_norm_pivot(role):
    ev = make_events(range(0, 50, 10))
    fig = C.grad_norm_heatmap(ev, role)
    hm = fig.data[0]
    assert list(hm.y) == list(LAYERS)  # forward order, also for gradients fired backwards
    assert np.asarray(hm.x).tolist() == [0, 10, 20, 30, 40]
    ref = pivot_norms(ev, role).loc[list(LAYERS), [0, 10, 20, 30, 40]].to_numpy()
    z = np.asarray(hm.z)
    assert z.dtype == np.float32 and z.shape == ref.shape
    np.testing.assert_allclose(z, np.log10(ref), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(hm.customdata), ref, rtol=1e-6)  # hover: the norm
    assert fig.layout.yaxis.autorange == "reversed"  # first layer on top
    assert "downsampled" not in fig.layout.title.text and "showing" not in fig.layout.title.text


def test_param_grad_norm_combines_weight_and_bias():
    ev = make_events([0])
    m = V.norm_matrix(ev, "param_grad")
    sel = ev[(ev["role"] == "param_grad") & (ev["layer"] == "conv2")]
    w = float(sel.loc[sel["index"] == "weight", "norm"].iloc[0])
    b = float(sel.loc[sel["index"] == "bias", "norm"].iloc[0])
    assert m.loc["conv2", 0] == pytest.approx(math.hypot(w, b), rel=1e-12)


def test_zero_and_missing_norms_are_blank_not_errors():
    ev = make_events([0, 1])
    ev.loc[(ev["layer"] == "fc") & (ev["role"] == "grad_output") & (ev["step"] == 1), "norm"] = 0
    ev = ev[~((ev["layer"] == "conv1") & (ev["role"] == "grad_output") & (ev["step"] == 0))]
    z = np.asarray(C.grad_norm_heatmap(ev, "grad_output").data[0].z)
    assert np.isnan(z[3, 1]) and np.isnan(z[0, 0])
    assert np.isfinite(z).sum() == z.size - 2


def test_unknown_role_and_empty_events():
    ev = make_events([0])
    with pytest.raises(ValueError, match="unknown role"):
        C.grad_norm_heatmap(ev, "gradient")
    fig = C.grad_norm_heatmap(ev.iloc[0:0], "grad_output")
    assert "none recorded" in fig.layout.title.text and not fig.data


def test_heatmap_on_a_real_recording_matches_autograd():
    """The heatmap's value at (conv, step) is the norm of dL/d(conv output) from autograd."""
    torch.manual_seed(0)
    model = SimpleModel()
    xs = [torch.randn(2, 1, 4, 4) for _ in range(2)]
    before = hook_counts(model)
    with hooklab.record(model, layers=["conv", "fc"], param_grads=True) as rec:
        for i, x in enumerate(xs):
            if i:
                rec.next_step()
            model(x).sum().backward()
    assert hook_counts(model) == before
    z = np.asarray(C.grad_norm_heatmap(rec.trace.events, "grad_output").data[0].z)
    for step, x in enumerate(xs):
        out = model.conv(x)  # the same graph as SimpleModel.forward, with conv's output held
        (g,) = torch.autograd.grad(model.fc(model.relu(out).view(-1, 32)).sum(), out)
        assert 10 ** float(z[0, step]) == pytest.approx(float(g.norm()), rel=1e-4)


# ----------------------------------------------------------------------------------------------
# Downsampling
# ----------------------------------------------------------------------------------------------
def test_downsample_mean_and_max_per_bin():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, (3, 1000))
    a[1, 5] = np.nan  # a missing value is skipped
    mat = pd.DataFrame(a, index=["a", "b", "c"], columns=list(range(0, 5000, 5)))
    mean, bm = V.downsample_steps(mat, 600, "mean")
    mx, bx = V.downsample_steps(mat, 600, "max")
    assert (bm.size, bm.shown, bm.total, bm.how) == (2, 500, 1000, "mean")
    assert bm.note() == "showing 500 of 1,000 steps (mean per bin of 2)"
    assert bx.note().endswith("(max per bin of 2)")
    assert list(mean.columns) == list(range(0, 5000, 10))  # each bin labelled by its first step
    pairs = a.reshape(3, 500, 2)
    np.testing.assert_allclose(mx.to_numpy(), np.nanmax(pairs, axis=2))
    np.testing.assert_allclose(mean.to_numpy()[0], pairs[0].mean(axis=1))
    assert mean.loc["b", 20] == pytest.approx(a[1, 4])  # column 5 is NaN: the mean of one value


def test_downsample_uneven_last_bin_and_no_op():
    mat = pd.DataFrame(np.arange(10, dtype=float)[None, :], index=["x"], columns=range(10))
    small, b = V.downsample_steps(mat, 4, "max")
    assert b.size == 3 and b.shown == 4 and list(small.columns) == [0, 3, 6, 9]
    assert small.loc["x"].tolist() == [2, 5, 8, 9]  # last bin holds one column
    same, b1 = V.downsample_steps(mat, 10)
    assert same is mat and not b1.downsampled and b1.note() == ""
    with pytest.raises(ValueError):
        V.downsample_steps(mat, 4, "median")  # type: ignore[arg-type]


def test_long_run_figure_stays_within_the_column_budget():
    """10,000 steps x 50 layers: the heatmap sends at most MAX_STEPS columns, and says so."""
    steps, layers = 10_000, [f"layer{i}" for i in range(50)]
    n = steps * len(layers)
    rng = np.random.default_rng(0)
    ev = pd.DataFrame({
        "seq": np.tile(np.arange(len(layers)), steps), "step": np.repeat(np.arange(steps), 50),
        "layer": np.tile(layers, steps), "role": "grad_output", "index": "0",
        "norm": rng.uniform(0.1, 1.0, n), "nan_count": 0, "inf_count": 0})
    fig = C.grad_norm_heatmap(ev, "grad_output", max_steps=600)
    z = np.asarray(fig.data[0].z)
    assert z.shape[0] == 50 and z.shape[1] <= 600
    assert z.size * 2 <= MAX_VALUES
    assert "of 10,000 steps (mean per bin of 17)" in fig.layout.title.text
    # the binned values are the mean of 17 consecutive steps' norms of that layer
    first = ev[(ev["layer"] == "layer7") & (ev["step"] < 17)]["norm"].mean()
    assert 10 ** float(z[7, 0]) == pytest.approx(first, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# NaN / Inf locator
# ----------------------------------------------------------------------------------------------
def _poison(ev, step, layer, role, nan=3, inf=0):
    m = (ev["step"] == step) & (ev["layer"] == layer) & (ev["role"] == role)
    assert m.sum() == 1
    ev.loc[m, ["nan_count", "inf_count"]] = [nan, inf]
    ev.loc[m, "norm"] = np.nan if nan else np.inf
    return ev


def test_first_nonfinite_finds_the_injected_first_nan_and_marks_it():
    ev = make_events(range(0, 100, 10))
    assert V.first_nonfinite(ev) is None
    _poison(ev, 40, "conv1", "output")  # later step, earlier layer
    _poison(ev, 30, "fc", "grad_output", nan=0, inf=2)  # later in step 30's firing order
    _poison(ev, 30, "conv3", "output")  # the first: step 30, forward, conv3
    found = V.first_nonfinite(ev)
    assert (found.step, found.layer, found.role, found.nan_count) == (30, "conv3", "output", 3)
    assert found.text() == "step 30, layer conv3, activation: 3 NaN, 0 Inf"
    fig = C.grad_norm_heatmap(ev, "output")
    marks = [d for d in fig.data if d.name == "first NaN/Inf"]
    assert len(marks) == 1 and list(marks[0].x) == [30.0] and list(marks[0].y) == ["conv3"]
    assert any("step 30, layer conv3" in a.text for a in fig.layout.annotations)
    # on a heatmap of another role the note is there, the ring too (conv3 is a row)
    fig_g = C.grad_norm_heatmap(ev, "grad_output", mark=False)
    assert not [d for d in fig_g.data if d.name == "first NaN/Inf"]


def test_nonfinite_marker_lands_on_the_bin_after_downsampling():
    ev = make_events(range(100), layers=("a", "b"), roles=("grad_output",))
    _poison(ev, 57, "b", "grad_output")
    fig = C.grad_norm_heatmap(ev, "grad_output", max_steps=10)  # bins of 10 steps
    mark = [d for d in fig.data if d.name == "first NaN/Inf"][0]
    assert list(mark.x) == [50.0] and list(mark.y) == ["b"]


def test_first_nonfinite_scalar():
    sc = make_scalars(range(20))
    assert V.first_nonfinite_scalar(sc) is None
    sc.loc[(sc["name"] == "loss") & (sc["step"] == 12), "value"] = np.inf
    sc.loc[(sc["name"] == "loss") & (sc["step"] == 15), "value"] = np.nan
    sc.loc[(sc["name"] == "dead_frac/conv1") & (sc["step"] == 3), "value"] = np.nan  # derived
    hit = V.first_nonfinite_scalar(sc)
    assert (hit.step, hit.name, hit.value) == (12, "loss", np.inf)


# ----------------------------------------------------------------------------------------------
# Scalars, update ratio, dead units
# ----------------------------------------------------------------------------------------------
def test_scalar_curves_one_panel_per_user_scalar():
    sc = make_scalars(range(30))
    fig = C.scalar_curves(sc)
    assert [a.text for a in fig.layout.annotations] == ["loss", "acc"]  # not the derived ones
    loss = [d for d in fig.data if d.xaxis == "x"][0]
    ref = sc[sc["name"] == "loss"].sort_values("step")
    np.testing.assert_allclose(np.asarray(loss.y), ref["value"].to_numpy(), rtol=1e-6)
    assert np.asarray(loss.x).tolist() == list(range(30))
    assert V.last_scalars(sc) == {"loss": (29, pytest.approx(ref["value"].iloc[-1])),
                                  "acc": (29, pytest.approx(29 / 50))}


def test_scalar_curves_two_runs_share_panels_and_downsample():
    a, b = make_scalars(range(5000), seed=1), make_scalars(range(5000), seed=2)
    fig = C.scalar_curves({"A": a, "B": b}, max_steps=1000)
    assert len(fig.data) == 4 and {d.name for d in fig.data} == {"A", "B"}
    assert all(len(d.x) == 1000 for d in fig.data)
    assert "showing 1,000 of 5,000 steps (mean per bin of 5)" in fig.layout.title.text
    first = [d for d in fig.data if d.name == "B" and d.xaxis == "x"][0]
    ref = b[b["name"] == "loss"]["value"].to_numpy()[:5].mean()
    assert float(first.y[0]) == pytest.approx(ref, rel=1e-6)


def test_update_ratio_lines_log_y_with_guide():
    sc = make_scalars(range(0, 40, 10))
    fig = C.update_ratio_lines(sc)
    assert fig.layout.yaxis.type == "log"
    assert [d.name for d in fig.data] == ["conv1.weight", "fc.weight"]
    guide = [s for s in fig.layout.shapes if s.name == "guide"]
    assert len(guide) == 1 and guide[0].y0 == guide[0].y1 == 1e-3
    ref = sc[sc["name"] == "update_ratio/fc.weight"]["value"].to_numpy()
    np.testing.assert_allclose(np.asarray(fig.data[1].y), ref, rtol=1e-6)
    assert "none recorded" in C.update_ratio_lines(sc[sc["name"] == "loss"]).layout.title.text


def test_dead_fraction_heatmap_equals_the_scalars():
    sc = make_scalars(range(0, 50, 5), every=5)
    fig = C.dead_fraction_heatmap(sc)
    hm = fig.data[0]
    assert list(hm.y) == list(LAYERS) and (hm.zmin, hm.zmax) == (0.0, 1.0)
    ref = np.array([[float(sc[(sc["name"] == f"dead_frac/{x}") & (sc["step"] == s)]["value"]
                           .iloc[0]) for s in range(0, 50, 5)] for x in LAYERS])
    np.testing.assert_allclose(np.asarray(hm.z), ref, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Two runs
# ----------------------------------------------------------------------------------------------
def test_ratio_heatmap_equals_b_over_a():
    steps = range(0, 60, 10)
    a = make_events(steps, seed=5)
    b = make_events(steps, seed=5, scale={"conv1": 0.5, "conv2": 0.5})  # same draws, scaled
    b = b[b["step"] != 50]  # B stopped earlier: only common steps are compared
    ratio = V.ratio_matrix(a, b, "grad_output")
    assert list(ratio.columns) == [0, 10, 20, 30, 40] and list(ratio.index) == list(LAYERS)
    ref = (pivot_norms(b, "grad_output") / pivot_norms(a, "grad_output")).loc[
        list(LAYERS), [0, 10, 20, 30, 40]]
    np.testing.assert_allclose(ratio.to_numpy(), ref.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(ratio.loc[["conv1", "conv2"]].to_numpy(), 0.5, rtol=1e-12)
    np.testing.assert_allclose(ratio.loc[["conv3", "fc"]].to_numpy(), 1.0, rtol=1e-12)
    fig = C.ratio_heatmap(a, b, names=("no edit", "conv2=scale(0.5)"))
    hm = fig.data[0]
    np.testing.assert_allclose(np.asarray(hm.z), np.log10(ref.to_numpy()), rtol=1e-5, atol=1e-7)
    assert hm.zmid == 0 and hm.zmin == -hm.zmax  # centred on ratio 1
    assert "conv2=scale(0.5) / no edit" in fig.layout.title.text
    assert "0.5" in list(hm.colorbar.ticktext) and "1" in list(hm.colorbar.ticktext)


def test_ratio_with_zero_in_a_is_blank():
    a, b = make_events([0], seed=1), make_events([0], seed=2)
    a.loc[(a["layer"] == "fc") & (a["role"] == "grad_output"), "norm"] = 0.0
    r = V.ratio_matrix(a, b)
    assert np.isnan(r.loc["fc", 0]) and np.isfinite(r.drop(index="fc")).all().all()
    fig = C.ratio_heatmap(a.iloc[0:0], b)
    assert "no common layers" in fig.layout.title.text


def test_categorical_columns_give_the_same_tables():
    """The store reads string columns as categoricals; the tables do not depend on that."""
    ev = make_events(range(0, 30, 10))
    cat = ev.astype({c: "category" for c in ("layer", "role", "index", "phase")})
    for role in V.ROLES:
        pd.testing.assert_frame_equal(V.norm_matrix(cat, role), V.norm_matrix(ev, role))
    sc = make_scalars(range(5))
    pd.testing.assert_frame_equal(V.scalar_matrix(sc.astype({"name": "category"}),
                                                  prefix="dead_frac/"),
                                  V.scalar_matrix(sc, prefix="dead_frac/"))


def test_scalar_matrix_keeps_the_last_value_of_a_step():
    sc = pd.DataFrame({"step": [0, 0, 1, 1, 1], "name": ["loss", "acc", "loss", "loss", "acc"],
                       "value": [3.0, 0.1, 2.0, 1.0, 0.2]})
    m = V.scalar_matrix(sc)
    assert list(m.index) == ["loss", "acc"] and list(m.columns) == [0, 1]
    assert m.to_numpy().tolist() == [[3.0, 1.0], [0.1, 0.2]]
    assert V.scalar_matrix(sc, names=["acc"]).to_numpy().tolist() == [[0.1, 0.2]]


def test_layer_names_are_text_not_html_on_every_heatmap():
    """A shared run's layer names reach the axes as text: ``<a href>`` cannot become a link
    (Plotly renders a subset of HTML in tick labels); the NaN/Inf marker finds its row."""
    evil = ('<a href="https://x.test">l</a>', "conv<b>2")
    ev = make_events(range(6), layers=evil)
    ev.loc[(ev.step == 3) & (ev.layer == evil[1]) & (ev.role == "grad_output"),
           "nan_count"] = 1
    fig = C.grad_norm_heatmap(ev, "grad_output")
    shown = list(fig.data[0].y)
    assert shown == [plain_text(x) for x in evil] or shown == [plain_text(x) for x in evil[::-1]]
    assert not any("<" in s for s in shown)
    marks = [t for t in fig.data[1:] if t.name == "first NaN/Inf"]
    assert len(marks) == 1 and list(marks[0].y) == ["conv&lt;b&gt;2"]
    dead = C.dead_fraction_heatmap(make_scalars(range(4), layers=evil))
    assert sorted(dead.data[0].y) == sorted(plain_text(x) for x in evil)
