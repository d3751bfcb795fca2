"""hooklab.evaluate in-process: values equal hooklab.cam's metrics computed directly,
resumable by key, never a finished-looking half run, one clear error for bad input, no hook
left behind."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hooklab import TraceStore
from hooklab.cam import engine
from hooklab.cam import metrics as cm
from hooklab.cam.road import road
from hooklab.core.errors import DataError, LayerNotFoundError
from hooklab.data.sources import open_source
from hooklab.models import zoo
from hooklab.studies.cluster import ClusterError
from hooklab.studies.evaluation import EvaluationError, evaluate, read_evaluation
from hooklab.studies.evaluation import scorer as scorer_mod
from hooklab.studies.evaluation.scorer import pinned_threads
from hooklab.testing import faults

METHODS = ["gradcam", "gradcam++"]


@pytest.fixture(scope="module")
def cnn():
    return zoo.get_model("simple_cnn", weights="shapes")


def _direct(model, start, stop, metrics, steps=32, seed=0):
    """The same chunk scored with hooklab.cam and hooklab.cam.metrics by hand."""
    x, labels, masks = open_source("shapes", n=stop).batch(range(start, stop))
    out = {}
    with pinned_threads(1), torch.random.fork_rng(devices=[]):
        res = engine.compute_many(model, x, METHODS, ["conv3"])
        for m in METHODS:
            r = res[engine.method_name(m), "conv3"]
            t = r.targets
            row = {"target": t.numpy(), "predicted": res.logits.argmax(1).numpy(),
                   "label": labels.numpy()}
            if "pointing" in metrics:
                row["pointing"] = cm.max_in_mask(r.maps, masks).numpy()
            if "ad_ic" in metrics:
                ad_ic = [cm.average_drop_increase(model, x[i:i + 1], r.maps[i:i + 1], t[i:i + 1])
                         for i in range(len(t))]
                row["average_drop"] = np.array([a for a, _ in ad_ic])
                row["increase_confidence"] = np.array([b for _, b in ad_ic])
            if "deletion" in metrics:
                di = cm.deletion_insertion(model, x, r.maps, t, steps=steps, seed=seed)
                # trapezoid areas by numpy, per image; their mean is the function's own AUC
                row["deletion_auc"] = np.trapezoid(di.deletion, di.fractions, axis=1)
                row["insertion_auc"] = np.trapezoid(di.insertion, di.fractions, axis=1)
                assert row["deletion_auc"].mean() == pytest.approx(di.deletion_auc, abs=1e-12)
            if "road" in metrics:
                rr = road(model, x, r.maps, t, seed=seed)
                row["road_morf"], row["road_lerf"] = rr.morf_score, rr.lerf_score
                row["road_combined"] = rr.combined
            out[engine.method_name(m)] = row
    return out


def test_per_image_values_equal_the_metrics_computed_directly(tmp_path, cnn, no_leak):
    metrics = ["pointing", "ad_ic", "deletion", "insertion"]
    with no_leak(cnn):
        res = evaluate(cnn, "shapes", n=12, methods=METHODS, layers="conv3", metrics=metrics,
                       batch_size=6, store=tmp_path)
    df = res.per_image
    assert len(df) == 12 * 2 and list(df["index"].unique()) == list(range(12))
    for start in (0, 6):
        ref = _direct(cnn, start, start + 6, metrics)
        for method, row in ref.items():
            got = df[(df["method"] == method) & df["index"].between(start, start + 5)]
            for col, want in row.items():
                np.testing.assert_allclose(got[col].to_numpy(dtype=float), want.astype(float),
                                           rtol=0, atol=1e-9, err_msg=f"{method} {col}")
    # the summary is mean and sample sd of the per-image column
    s = res.summary.set_index(["method", "layer", "metric"])
    col = df[df["method"] == "gradcam"]["deletion_auc"]
    assert s.loc[("gradcam", "conv3", "deletion_auc"), "mean"] == pytest.approx(col.mean())
    assert s.loc[("gradcam", "conv3", "deletion_auc"), "sd"] == pytest.approx(col.std(ddof=1))
    assert set(s.index.get_level_values("metric")) == {
        "pointing", "average_drop", "increase_confidence", "deletion_auc", "insertion_auc"}
    # what is stored is what was returned; the run is finished with the summary in it
    store = TraceStore(tmp_path)
    again = read_evaluation(store, res.run_id)
    pd.testing.assert_frame_equal(again.per_image, df)
    pd.testing.assert_frame_equal(again.summary, res.summary)
    assert store.watch_run(res.run_id).status == "finished"
    assert store.list().loc[0, "page"] == "evaluation"


def test_road_per_image_equals_road_directly(tmp_path, cnn):
    res = evaluate(cnn, "shapes", n=3, methods=METHODS, metrics=["road"], batch_size=3,
                   store=tmp_path)
    ref = _direct(cnn, 0, 3, ["road"])
    for method, row in ref.items():
        got = res.per_image[res.per_image["method"] == method]
        for col in ("road_morf", "road_lerf", "road_combined"):
            np.testing.assert_allclose(got[col].to_numpy(), row[col], rtol=0, atol=1e-6)


class Stop(Exception):
    pass


def _counting(monkeypatch):
    calls = []
    real = scorer_mod.Scorer.score

    def score(self, start, stop):
        calls.append((start, stop))
        return real(self, start, stop)

    monkeypatch.setattr(scorer_mod.Scorer, "score", score)
    return calls


def test_resume_after_an_interrupt_skips_what_was_scored(tmp_path, cnn, monkeypatch):
    calls = _counting(monkeypatch)
    args = dict(n=20, methods=["gradcam"], metrics=["pointing", "deletion"], batch_size=4)

    def stop_after_two_chunks(done, total):
        if done >= 8:
            raise Stop

    with pytest.raises(Stop):
        evaluate("simple_cnn", "shapes", store=tmp_path / "a", progress=stop_after_two_chunks,
                 **args)
    assert calls == [(0, 4), (4, 8)]
    store = TraceStore(tmp_path / "a")
    (rid,) = store.run_ids()
    run = store.watch_run(rid)
    assert run.status == "failed" and "summary" not in run.meta and run.steps == list(range(8))
    calls.clear()
    seen = []
    res = evaluate("simple_cnn", "shapes", store=tmp_path / "a",
                   progress=lambda d, t: seen.append((d, t)), **args)
    assert res.run_id == rid and res.skipped == 8 and res.scored == 12
    assert calls == [(8, 12), (12, 16), (16, 20)]
    assert seen[0] == (8, 20) and seen[-1] == (20, 20)
    calls.clear()
    whole = evaluate("simple_cnn", "shapes", store=tmp_path / "b", **args)
    pd.testing.assert_frame_equal(res.per_image, whole.per_image)
    pd.testing.assert_frame_equal(res.summary, whole.summary)
    calls.clear()
    done = evaluate("simple_cnn", "shapes", store=tmp_path / "a", **args)  # finished: no work
    assert calls == [] and done.scored == 0
    pd.testing.assert_frame_equal(done.per_image, whole.per_image)
    # other arguments are another run; resume=False is always a new one
    evaluate("simple_cnn", "shapes", store=tmp_path / "a", **{**args, "n": 4})
    evaluate("simple_cnn", "shapes", store=tmp_path / "a", resume=False, **{**args, "n": 4})
    assert len(store.run_ids()) == 3


def test_an_exception_leaves_a_failed_run_and_no_hook(tmp_path, no_leak):
    model = zoo.get_model("simple_cnn", weights="shapes")
    with no_leak(model):
        # the 1st chunk and the up-front check run cleanly; a forward in chunk 2 raises
        with faults.inject("forward", nth=45), pytest.raises(faults.InjectedFault):
            evaluate(model, "shapes", n=16, metrics=["pointing"], batch_size=4, store=tmp_path)
    store = TraceStore(tmp_path)
    (rid,) = store.run_ids()
    run = store.watch_run(rid)
    assert run.status == "failed" and "InjectedFault" in run.error
    assert "summary" not in run.meta and 0 < len(run.steps) < 16
    assert store.list().loc[0, "status"] != "finished"


def _imagefolder(root):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 60 * i + 40, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_imagefolder_without_masks_leaves_pointing_out_with_a_note(tmp_path):
    folder = _imagefolder(tmp_path / "val")
    res = evaluate("simple_cnn", f"imagefolder:{folder}", metrics=None, batch_size=4,
                   store=tmp_path / "s")
    assert "pointing" not in res.per_image and "deletion_auc" in res.per_image
    assert any("pointing" in note for note in res.notes)
    assert res.per_image["label"].tolist() == [0, 0, 1, 1]
    with pytest.raises(EvaluationError, match="needs object masks"):
        evaluate("simple_cnn", f"imagefolder:{folder}", metrics=["pointing"],
                 store=tmp_path / "s2")
    assert not (tmp_path / "s2").exists() or TraceStore(tmp_path / "s2").run_ids() == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"data": "imagefolder:/nonexistent/val"}, DataError, "one subfolder per class"),
    ({"methods": ["nosuchcam"]}, engine.CamError, "unknown CAM method"),
    ({"layers": "conv9"}, LayerNotFoundError, "conv9"),
    ({"metrics": ["accuracy"]}, EvaluationError, "unknown metric"),
    ({"batch_size": 0}, EvaluationError, "batch_size"),
])
def test_bad_input_is_one_clear_error_and_nothing_is_stored(tmp_path, kwargs, error, match):
    args = {"data": "shapes", "n": 4, **kwargs}
    with pytest.raises(error, match=match):
        evaluate("simple_cnn", store=tmp_path, **args)
    assert TraceStore(tmp_path).run_ids() == []


def test_a_ray_address_that_does_not_answer_is_one_message(tmp_path):
    pytest.importorskip("ray")
    start = time.monotonic()
    with pytest.raises(ClusterError, match="does not answer"):
        evaluate("simple_cnn", "shapes", n=4, store=tmp_path, ray="127.0.0.1:9", ray_timeout=2)
    assert time.monotonic() - start < 30
    assert TraceStore(tmp_path).run_ids() == []
