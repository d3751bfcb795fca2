"""The Training page's demo training (hooklab.studies.watch_demo): two watch runs from the same
seed, no edit and conv2=scale(0.5); at step 0 the edit halves exactly what autograd says it
halves, and the loss is the same (same weights, same batch)."""

from __future__ import annotations

import pytest

from hooklab.store.runs import TraceStore
from hooklab.studies import training_runs as tr
from hooklab.studies import training_views as tv
from hooklab.studies import watch_demo


def test_demo_pair_halves_upstream_of_conv2_at_step_0(tmp_path):
    store = TraceStore(tmp_path / "runs")
    seen: list[tuple[int, int]] = []
    a, b = watch_demo.demo_pair(store, steps=3, progress=lambda d, n, _: seen.append((d, n)))
    assert seen == [(i, 6) for i in range(1, 7)]  # one bar over both arms
    ra, rb = store.watch_run(a), store.watch_run(b)
    assert ra.status == rb.status == "finished" and ra.steps == rb.steps == [0, 1, 2]
    assert ra.meta["page"] == "training" and "demo" in store.manifest(b)["tags"]
    assert tr.training_runs(store.list())["edits"].tolist() == ["conv2=scale(0.5)", ""]
    out = tv.ratio_matrix(ra.events, rb.events, "grad_output")[0]
    par = tv.ratio_matrix(ra.events, rb.events, "param_grad")[0]
    assert out["conv1"] == pytest.approx(0.5, rel=1e-5)  # upstream of conv2: halved
    assert out[["conv2", "conv3", "fc1", "fc2"]].tolist() == pytest.approx([1.0] * 4, rel=1e-5)
    assert par[["conv1", "conv2"]].tolist() == pytest.approx([0.5, 0.5], rel=1e-5)
    assert par[["conv3", "fc1", "fc2"]].tolist() == pytest.approx([1.0] * 3, rel=1e-5)
    assert ra.scalar("loss").iloc[0] == pytest.approx(rb.scalar("loss").iloc[0], rel=1e-6)
    names = set(rb.scalars["name"].astype(str))
    assert {"loss", "acc", "update_ratio/conv2.weight", "dead_frac/fc1"} <= names


def test_demo_rejects_bad_sizes(tmp_path):
    store = TraceStore(tmp_path / "runs")
    with pytest.raises(ValueError, match="steps"):
        watch_demo.demo_training(store, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        watch_demo.demo_training(store, steps=2, batch_size=64, n_train=32)
    assert store.run_ids() == []  # nothing half-written
