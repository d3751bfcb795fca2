"""Edit sweeps in-process (hooklab.studies.sweep): one watch run per trial whose meta
rebuilds the sweep; at step 0 conv2=scale(0.5) halves exactly what plain autograd says it
halves (the oracle: the same model, batch and edit written in plain PyTorch); a failing trial is
its row and the others are stored; bad configurations fail before any trial; no hook is left."""

from __future__ import annotations

import math
import socket
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hooklab.core.errors import EditError, LayerNotFoundError
from hooklab.data import datasets as data_mod
from hooklab.models.zoo import get_model
from hooklab.store.runs import TraceStore
from hooklab.studies import sweep as es
from hooklab.studies.cluster import ClusterError
from hooklab.studies.sweep import list_sweeps, load_sweep, sweep_ratios
from hooklab.studies.sweep.run import check_visible
from hooklab.studies.sweep.trial import trial_batches
from hooklab.studies.training_views import norm_matrix
from hooklab.testing import sweep_faults
from tests.models.registry_helpers import saved_registry

SMALL = {"steps": 3, "n_train": 64, "batch_size": 16, "n_test": 32}
LAYERS = ["conv1", "conv2", "conv3", "fc1", "fc2"]


@pytest.fixture(scope="module")
def halving(tmp_path_factory):
    store = TraceStore(tmp_path_factory.mktemp("sweep") / "runs")
    result = es.sweep_edits(["", "conv2=scale(0.5)"], seeds=(0,), store=store,
                            in_process=True, name="halving", **SMALL)
    return store, result


def _oracle_step0(spec: es.TrialSpec, halve: bool) -> dict[str, float]:
    """Step 0 in plain PyTorch: ||dL/d out|| per layer (as it arrives) and conv1's weight
    gradient; the edit is written into the graph (0.5 * y + 0.5 * y.detach(): same value, half
    the gradient upstream), not by hooklab."""
    model = get_model("simple_cnn", seed=spec.seed, num_classes=6).train()
    train = data_mod.make_shapes(spec.n_train, 0, "train")
    x, y = next(iter(trial_batches(spec, train.images, train.labels)))
    outs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, _i, out):
            if name == "conv2" and halve:
                out = 0.5 * out + 0.5 * out.detach()
            outs[name] = out
            return out
        return hook

    handles = [getattr(model, n).register_forward_hook(keep(n)) for n in LAYERS]
    try:
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, [outs[n] for n in LAYERS] + [model.conv1.weight])
    finally:
        for h in handles:
            h.remove()
    res = {n: float(g.norm()) for n, g in zip(LAYERS, grads, strict=False)}
    res["conv1.weight"] = float(grads[-1].norm())
    res["loss"] = float(loss.detach())
    return res


def test_a_sweep_stores_one_watch_run_per_trial_that_rebuilds_it(halving):
    store, result = halving
    t = result.trials
    assert t["config"].tolist() == ["", "conv2=scale(0.5)"] and t["seed"].tolist() == [0, 0]
    assert t["status"].tolist() == ["finished", "finished"] and result.where == "in-process"
    assert t["final_accuracy"].between(0, 1).all() and (t["final_loss"] > 0).all()
    for row in t.itertuples():
        m = store.manifest(row.run_id)
        assert m["meta"]["sweep"]["id"] == result.sweep_id
        assert m["meta"]["sweep"]["config"] == row.config and m["meta"]["page"] == "training"
        assert {"sweep", result.sweep_id} <= set(m["tags"])
        run = store.watch_run(row.run_id)
        assert run.status == "finished" and run.steps == [0, 1, 2]
        assert run.scalar("test_acc").tolist() == [row.final_accuracy]  # last step only
        assert run.scalar("test_acc").index.tolist() == [2]
    again = load_sweep(store, result.sweep_id)
    cols = ["trial", "config", "seed", "run_id", "final_accuracy", "final_loss", "status"]
    assert again.trials[cols].equals(t[cols]) and again.name == "halving"
    listed = list_sweeps(store)
    assert listed["sweep_id"].tolist() == [result.sweep_id]
    assert listed[["configs", "seeds", "runs", "finished", "steps"]].iloc[0].tolist() == [
        2, 1, 2, 2, 3]


def test_step_0_halving_matches_plain_autograd(halving):
    store, result = halving
    base_id, edit_id = result.trials["run_id"]
    spec = es.plan(["conv2=scale(0.5)"], (0,), store="x", check_layers=False, **SMALL)[0]
    for rid, halve in ((base_id, False), (edit_id, True)):
        run = store.watch_run(rid)
        want = _oracle_step0(spec, halve)
        got = norm_matrix(run.events, "grad_output")[0]
        for layer in LAYERS:
            assert got[layer] == pytest.approx(want[layer], rel=1e-5), (rid, layer)
        ev = run.events
        pw = ev[(ev.step == 0) & (ev.role == "param_grad") & (ev.layer == "conv1")
                & (ev["index"] == "weight")]["norm"]
        assert float(pw.iloc[0]) == pytest.approx(want["conv1.weight"], rel=1e-5)
        assert run.scalar("loss").iloc[0] == pytest.approx(want["loss"], rel=1e-6)
    ratios = sweep_ratios(store, result.trials)
    at0 = ratios[ratios.step == 0].set_index("layer")["ratio"]
    assert at0["conv1"] == pytest.approx(0.5, rel=1e-5)  # upstream of conv2: halved
    assert at0[["conv2", "conv3", "fc1", "fc2"]].tolist() == pytest.approx([1.0] * 4, rel=1e-5)
    assert set(ratios["trial"]) == {1} and sorted(set(ratios["step"])) == [0, 1, 2]
    par = sweep_ratios(store, result.trials, "param_grad")
    p0 = par[par.step == 0].set_index("layer")["ratio"]
    assert p0[["conv1", "conv2"]].tolist() == pytest.approx([0.5, 0.5], rel=1e-5)


def test_the_same_trial_gives_the_same_run_contents(halving, tmp_path):
    store, result = halving
    again = es.sweep_edits(["conv2=scale(0.5)"], seeds=(0,), store=tmp_path / "runs",
                           in_process=True, **SMALL)
    a = store.watch_run(result.trials["run_id"][1])
    b = TraceStore(tmp_path / "runs").watch_run(again.trials["run_id"][0])
    np.testing.assert_array_equal(a.scalars["value"].to_numpy(), b.scalars["value"].to_numpy())
    np.testing.assert_array_equal(a.events["norm"].to_numpy(), b.events["norm"].to_numpy())


def test_a_failing_trial_is_its_row_and_the_others_are_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_MODELS", sweep_faults.MODULE)
    store = TraceStore(tmp_path / "runs")
    seen = []
    with saved_registry():
        sweep_faults.register()  # the registry may have been reset since the module's import
        result = es.sweep_edits(["", "conv2=scale(0.5)"], seeds=(0, 1), store=store,
                                in_process=True, model="sweep_raising_cnn",
                                progress=lambda d, n, _: seen.append((d, n)), **SMALL)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    t = result.trials
    assert t["status"].tolist() == ["finished", "failed", "finished", "failed"]
    failed = t[t.status == "failed"]
    assert failed["seed"].tolist() == [1, 1]
    assert failed["message"].str.contains("injected fault").all()
    assert failed["final_accuracy"].isna().all()
    for rid in t["run_id"]:  # the failed trials' runs are stored, marked failed
        assert store.exists(rid)
    back = load_sweep(store, result.sweep_id).trials
    assert back["status"].tolist() == ["finished", "failed", "finished", "failed"]
    assert back[back.status == "failed"]["message"].str.contains("injected fault").all()
    assert store.watch_run(failed["run_id"].iloc[0]).steps == [0, 1]  # up to the fault


def test_no_hook_is_left_after_a_trial_also_after_an_exception(tmp_path, no_leak):
    spec = es.plan([""], (0,), store=str(tmp_path / "runs"), check_layers=False,
                   **SMALL)[0]
    model = get_model("simple_cnn", seed=0, num_classes=6)
    threads = torch.get_num_threads()
    spec = es.TrialSpec(**{**spec.to_dict(), "threads": threads + 1})
    with no_leak(model):
        row = es.run_trial(spec, model=model)
    assert row["status"] == "finished"
    assert torch.get_num_threads() == threads  # the trial's thread count is undone
    spec2 = es.plan(["conv2=scale(0.5)"], (0,), store=str(tmp_path / "runs"),
                    check_layers=False, **SMALL)[0]
    bad = get_model("simple_cnn", seed=0, num_classes=6)
    calls = []

    def explode(_m, _i, out):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in the second forward")

    h = bad.conv3.register_forward_hook(explode)
    try:
        with no_leak(bad), pytest.raises(RuntimeError, match="boom"):
            es.run_trial(spec2, model=bad)
    finally:
        h.remove()
    run = TraceStore(tmp_path / "runs").watch_run(spec2.run_id)
    assert run.status == "failed" and "boom" in run.error


@pytest.mark.parametrize("configs,error,match", [
    (["conv2=scal(0.5)"], EditError, "configuration 1"),
    (["", "conv2 scale(0.5)"], EditError, "configuration 2.*LAYER=EDIT"),
    (["conv9=scale(0.5)"], LayerNotFoundError, "conv9"),
    (["", ""], es.SweepError, "twice"),
    ([], es.SweepError, "at least one"),
])
def test_bad_configurations_fail_before_any_trial(tmp_path, configs, error, match):
    store = TraceStore(tmp_path / "runs")
    with pytest.raises(error, match=match):
        es.sweep_edits(configs, store=store, in_process=True, **SMALL)
    assert store.run_ids() == []


@pytest.mark.parametrize("kw,match", [
    ({"seeds": []}, "seeds"), ({"seeds": (0, 0)}, "repeat"), ({"steps": 0}, "steps"),
    ({"batch_size": 128}, "exceeds"), ({"lr": math.nan}, "lr"),
    ({"cpus_per_trial": 0}, "cpus_per_trial"), ({"n_test": -1}, "n_test")])
def test_bad_sizes_fail_before_any_trial(tmp_path, kw, match):
    store = TraceStore(tmp_path / "runs")
    args = {**SMALL, **kw}
    with pytest.raises(es.SweepError, match=match):
        es.sweep_edits([""], store=store, in_process=True, **args)
    assert store.run_ids() == []


def test_a_run_the_driver_cannot_see_is_a_failed_trial_naming_the_shared_folder(tmp_path):
    store = TraceStore(tmp_path / "runs")
    rows = [{"trial": 0, "config": "", "seed": 0, "run_id": "20261202-000000-00000000-t000",
             "final_accuracy": 0.9, "final_loss": 0.3, "status": "finished", "message": "",
             "host": "node-7"}]
    out = check_visible(store, rows)
    assert out[0]["status"] == "failed" and math.isnan(out[0]["final_accuracy"])
    assert "node-7" in out[0]["message"] and "every node mounts" in out[0]["message"]


def test_without_ray_the_ray_path_says_how_to_get_it(tmp_path, monkeypatch):
    from hooklab.studies.sweep import on_ray

    monkeypatch.setattr(on_ray, "ray_available", lambda: False)
    store = TraceStore(tmp_path / "runs")
    with pytest.raises(ClusterError, match=r"pip install 'hooklab\[ray\]'.*--in-process"):
        es.sweep_edits([""], store=store, ray="local", **SMALL)
    assert store.run_ids() == []


def test_a_sweep_that_is_not_in_the_store_is_one_message(tmp_path):
    from hooklab.core.errors import StoreError

    with pytest.raises(StoreError, match="no sweep 'sweep-x'"):
        load_sweep(TraceStore(tmp_path / "runs"), "sweep-x")
    assert list_sweeps(TraceStore(tmp_path / "runs")).empty


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_that_does_not_answer_fails_before_any_trial(tmp_path):
    pytest.importorskip("ray")
    store = TraceStore(tmp_path / "runs")
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=f"127.0.0.1:{port}.*does not answer"):
        es.sweep_edits([""], store=store, ray=f"127.0.0.1:{port}", timeout=2.0, **SMALL)
    assert time.monotonic() - t0 < 15
    assert store.run_ids() == []
