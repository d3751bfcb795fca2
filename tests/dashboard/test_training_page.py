"""AppTest of the Training page: the demo on an empty store, a watch run's figures, a corrupt run,
a live run, two runs compared, a NaN callout, and "open in Training" from the Runs page.

Runs are written by ``hooklab.watch`` itself (the seed's SimpleModel, a few steps), and the
page's figures are compared with the chart functions on the run as the store reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hooklab
from dashboard import pages
from hooklab.charts import runs as run_charts
from hooklab.models.zoo import SimpleModel, seed_model
from hooklab.store.runs import TraceStore
from hooklab.studies import training_runs as tr
from hooklab.studies import training_views as tv
from tests.conftest import hook_counts
from tests.dashboard.conftest import figures, plotly_array, run_page

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "training.py")
TIMEOUT = 180


def _watched(store: TraceStore, steps: int = 4, edits=None, nan_at: int | None = None,
             **kw) -> str:
    """A short watched loop on SimpleModel (no optimiser update: every step sees the same
    weights and input, so an edit's ratio holds at every step). Returns the run id."""
    model = seed_model()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 3])
    before = hook_counts(model)
    with hooklab.watch(model, store, every=1, edits=edits, segment_steps=1,
                       meta={"model": "simple_model"}, **kw) as w:
        for step in range(steps):
            xi = x.clone()
            if step == nan_at:
                xi[0, 0, 1, 2] = float("nan")
            model.zero_grad()
            loss = F.cross_entropy(model(xi), y)
            loss.backward()
            w.step(loss=loss.item(), acc=0.5)
    assert hook_counts(model) == before
    return str(w.run_id)


def _texts(at, *kinds) -> str:
    return "\n".join(el.value for k in kinds for el in getattr(at, k))


def _ok(at) -> None:
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not at.error, [e.value for e in at.error]


def _titles(at) -> list[str]:
    return [f["layout"]["title"]["text"] for f in figures(at)]


def _heatmap_z(fig: dict) -> np.ndarray:
    tr = fig["data"][0]
    z = plotly_array(tr["z"])
    return z.reshape(len(tr["y"]), -1)


@pytest.fixture
def store(store_dir) -> TraceStore:
    return TraceStore(store_dir)


def test_empty_store_offers_the_demo_and_its_runs_appear(store):
    at = run_page(PAGE, TIMEOUT)
    _ok(at)
    assert at.title[0].value == "Training"
    assert "No training run in the store yet" in _texts(at, "info")
    assert not figures(at)
    at.slider(key="training_demo_steps").set_value(4)
    at.button(key="training_demo").click().run(timeout=TIMEOUT)
    _ok(at)
    listing = tr.training_runs(store.list())
    assert len(listing) == 2 and set(listing["status"]) == {"finished"}
    b, a = listing["run_id"]  # newest first: B (conv2=scale(0.5)) was trained second
    assert list(listing["edits"]) == ["conv2=scale(0.5)", ""]
    assert at.query_params["run"] == b and at.query_params["compare"] == a
    titles = _titles(at)
    assert titles[0] == "Output gradient norm per layer"
    ratio = figures(at)[titles.index(next(x for x in titles if "norm ratio" in x))]
    z = _heatmap_z(ratio)
    rows = ratio["data"][0]["y"]
    # step 0: same seed, weights and batch; conv2's halved gradient halves conv1's exactly
    assert 10 ** z[rows.index("conv1"), 0] == pytest.approx(0.5, rel=1e-4)
    assert 10 ** z[rows.index("conv2"), 0] == pytest.approx(1.0, rel=1e-4)  # as it arrives
    assert 10 ** z[rows.index("fc2"), 0] == pytest.approx(1.0, rel=1e-4)
    assert store.watch_run(b).steps == [0, 1, 2, 3]


def test_watch_run_opens_with_its_figures(store):
    rid = _watched(store, steps=5)
    at = run_page(PAGE, TIMEOUT, run=rid)
    _ok(at)
    assert rid in _texts(at, "info") and "finished" in _texts(at, "info")
    metrics = {m.label: m.value for m in at.metric}
    run = store.watch_run(rid)
    assert metrics["Recorded steps"] == "5" and metrics["Last step"] == "4"
    assert metrics["loss"] == f"{run.scalar('loss').iloc[-1]:.4g}"
    figs = figures(at)
    heat = figs[0]
    m = tv.norm_matrix(run.events, "grad_output")
    assert heat["data"][0]["y"] == list(m.index) == ["conv", "relu", "fc"]
    np.testing.assert_allclose(_heatmap_z(heat), np.log10(m.to_numpy()), rtol=1e-5)
    # the norms are the gradients autograd gives on the same graph (same weights every step)
    model = seed_model()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = model.conv(x)
    logits = model.fc(model.relu(out).view(-1, 32))
    (g,) = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([1, 3])), out)
    assert m.loc["conv"].to_numpy() == pytest.approx([float(g.norm())] * 5, rel=1e-5)
    titles = _titles(at)
    assert "Training: loss, acc" in titles[1]
    assert any(x.startswith("Update ratio") for x in titles)
    assert any(x.startswith("Dead units") for x in titles)
    # another heatmap role: parameter gradients
    at.radio(key="training_role").set_value("param_grad").run()
    _ok(at)
    assert _titles(at)[0] == "Parameter gradient norm per layer"
    assert figures(at)[0]["data"][0]["y"] == ["conv", "fc"]  # relu has no parameters


def test_corrupt_run_is_one_clear_message(store):
    rid = _watched(store, steps=3)
    seg = sorted((store.root / rid).glob("seg-000001.events.parquet"))[0]
    seg.write_bytes(seg.read_bytes()[:40])  # a committed segment, truncated
    at = run_page(PAGE, TIMEOUT, run=rid)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and rid in errors[0] and "seg-000001" in errors[0], errors
    assert "Traceback" not in errors[0]
    # a run directory whose manifest is not JSON: also one message, no traceback
    bad = store.root / "20261202-000000-deadbeef"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    at = run_page(PAGE, TIMEOUT, run=bad.name)
    assert not at.exception
    assert len(at.error) == 1 and bad.name in at.error[0].value


def test_live_run_shows_as_live_then_finished(store):
    model = SimpleModel()
    x = torch.randn(2, 1, 4, 4)
    with hooklab.watch(model, store, every=1, segment_steps=1) as w:
        for _ in range(3):
            model.zero_grad()
            model(x).sum().backward()
            w.step(loss=1.0)
        assert w.flush()  # segments are written by a background thread: wait for them
        listing = tr.training_runs(store.list())
        assert list(listing["status"]) == ["live"]
        at = run_page(PAGE, TIMEOUT)
        _ok(at)
        assert "● live" in _texts(at, "info")
        assert "refreshes every 3 s" in _texts(at, "caption")
        assert at.selectbox(key=f"training_run_{None}").options[0].startswith("● live")
        assert {m.label: m.value for m in at.metric}["Recorded steps"] == "3"
        for _ in range(2):  # more steps: the page reads them (the cache key is the segments)
            model.zero_grad()
            model(x).sum().backward()
            w.step(loss=0.5)
        assert w.flush()
        at.run()
        assert {m.label: m.value for m in at.metric}["Recorded steps"] == "5"
    at = run_page(PAGE, TIMEOUT, run=w.run_id)
    _ok(at)
    assert "finished" in _texts(at, "info") and "● live" not in _texts(at, "info")


def test_compare_two_runs_ratio_is_b_over_a(store):
    a = _watched(store, steps=3)
    b = _watched(store, steps=3, edits="fc=scale(0.5)")
    at = run_page(PAGE, TIMEOUT, run=b, compare=a)
    _ok(at)
    assert "Two runs side by side" in _texts(at, "subheader")
    figs = figures(at)
    ratio = [f for f in figs if "norm ratio" in f["layout"]["title"]["text"]][0]
    rows = ratio["data"][0]["y"]
    z = 10 ** _heatmap_z(ratio)
    ref = tv.ratio_matrix(store.watch_run(a).events, store.watch_run(b).events)
    np.testing.assert_allclose(z, ref.to_numpy(), rtol=1e-5)
    assert z[rows.index("conv")] == pytest.approx([0.5] * 3, rel=1e-5)  # upstream of fc
    assert z[rows.index("fc")] == pytest.approx([1.0] * 3, rel=1e-5)  # as it arrives at fc
    assert "`fc=scale(0.5)`" in _texts(at, "markdown")
    # the curves show both runs
    curves = [f for f in figs if f["layout"]["title"]["text"].startswith("Training:")][0]
    assert {d["name"] for d in curves["data"]} == {f"A {a}", f"B {b}"}
    assert f"/training?run={b}&compare={a}" in _texts(at, "code")
    # dropping the comparison removes it from the URL
    at.selectbox(key=f"training_cmp_{b}_{a}").set_value("").run()
    _ok(at)
    assert "compare" not in at.query_params and "Two runs side by side" not in _texts(
        at, "subheader")


def test_first_nan_is_called_out_and_marked(store):
    rid = _watched(store, steps=4, nan_at=2)
    at = run_page(PAGE, TIMEOUT, run=rid)
    _ok(at)
    warn = _texts(at, "warning")
    assert "First NaN/Inf: step 2, layer conv, activation" in warn, warn
    assert "First non-finite scalar: step 2: loss = nan" in warn
    heat = figures(at)[0]
    marks = [d for d in heat["data"] if d.get("name") == "first NaN/Inf"]
    assert len(marks) == 1 and plotly_array(marks[0]["x"]).tolist() == [2.0]
    assert marks[0]["y"] == ["conv"]


def test_a_one_shot_run_opens_too(store):
    """A run saved from a plain recording with page "training" (not streamed) opens, with its
    history's scalars."""
    model = seed_model()
    with hooklab.record(model, layers=["conv", "fc"], param_grads=True,
                        meta={"page": "training", "model": "simple_model",
                              "history": [{"step": 0, "loss": 2.0, "accuracy": 0.25},
                                          {"step": 1, "loss": 1.5, "accuracy": 0.5}]}) as rec:
        rec.run(torch.randn(2, 1, 4, 4))
    rid = store.save(rec.trace)
    at = run_page(PAGE, TIMEOUT, run=rid)
    _ok(at)
    assert rid in _texts(at, "info")
    curves = figures(at)[1]
    assert curves["layout"]["title"]["text"] == "Training: loss, accuracy"
    assert plotly_array(curves["data"][0]["y"]).tolist() == [2.0, 1.5]


def test_watch_runs_open_in_training_from_the_runs_page(store):
    rid = _watched(store, steps=2)
    meta = store.manifest(rid)["meta"]
    assert run_charts.page_of(meta) == "training" and pages.page_of(meta).id == "training"
    assert pages.share_link(rid, "training") == f"/training?run={rid}"
    runs_page = str(Path(PAGE).with_name("runs.py"))
    at = run_page(runs_page, TIMEOUT, run=rid)
    _ok(at)
    assert f"/training?run={rid}" in _texts(at, "caption")


def test_long_run_is_binned_and_the_page_says_so(store):
    rid = _watched(store, steps=150)
    at = run_page(PAGE, TIMEOUT, run=rid)
    at.select_slider(key="training_max_steps").set_value(100).run()
    _ok(at)
    assert "Long run: showing 75 of 150 steps (mean per bin of 2)." in _texts(at, "caption")
    heat = figures(at)[0]
    assert "showing 75 of 150 steps (mean per bin of 2)" in heat["layout"]["title"]["text"]
    z = _heatmap_z(heat)
    assert z.shape == (3, 75)
    m = tv.norm_matrix(store.watch_run(rid).events, "grad_output")
    assert 10 ** z[0, 1] == pytest.approx(m.iloc[0, 2:4].mean(), rel=1e-5)  # steps 2 and 3
    at.radio(key="training_how").set_value("max").run()
    _ok(at)
    assert "(max per bin of 2)" in figures(at)[0]["layout"]["title"]["text"]


ENDED_EARLY = """
import os, sys, torch
import hooklab
from hooklab.models.zoo import SimpleModel
model = SimpleModel()
x = torch.randn(2, 1, 4, 4)
with hooklab.watch(model, sys.argv[1], every=1, segment_steps=1) as w:
    for _ in range(3):
        model.zero_grad()
        model(x).sum().backward()
        w.step(loss=1.0)
    assert w.flush()  # the three segments are on disk
    print(w.run_id, flush=True)
    os._exit(0)  # the writer dies inside the with: the run stays marked live
"""


def test_a_run_whose_writer_died_is_marked_ended_early(store):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ENDED_EARLY, str(store.root)], check=True,
                         capture_output=True, text=True, timeout=TIMEOUT,
                         cwd=Path(PAGE).parents[2])
    rid = out.stdout.split()[-1]
    at = run_page(PAGE, TIMEOUT)
    _ok(at)
    assert at.selectbox(key=f"training_run_{None}").options[0].startswith("ended early")
    assert "ended early" in _texts(at, "info")
    assert "This run ended early" in _texts(at, "warning")
    assert store.watch_run(rid).steps == [0, 1, 2]  # every committed step survives
    assert {m.label: m.value for m in at.metric}["Recorded steps"] == "3"
    assert "refreshes every" not in _texts(at, "caption")
    assert rid in _texts(at, "info")
