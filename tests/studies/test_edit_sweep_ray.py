"""Edit sweeps as Ray Tune trials on a local Ray (2 CPUs, started once for the module): the same
stored run contents as in-process, the halving at step 0 in the runs the workers wrote, a worker
that dies mid-run is that trial's row (nothing stored twice, the others stored). (A cluster that
does not answer: tests/studies/test_edit_sweep.py, where no Ray is initialised.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hooklab.store.runs import TraceStore
from hooklab.studies import sweep as es
from hooklab.studies.cluster import ray_session
from hooklab.studies.sweep import load_sweep, sweep_ratios
from hooklab.testing import sweep_faults
from tests.models.registry_helpers import saved_registry

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"steps": 4, "n_train": 64, "batch_size": 16, "n_test": 32}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module; workers import the faulty models ($HOOKLAB_MODELS, which
    ray_session forwards) and see the repo."""
    pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOOKLAB_MODELS", sweep_faults.MODULE)
        mp.setenv("PYTHONPATH", os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        mp.setenv(sweep_faults.DRIVER_PID_ENV, str(os.getpid()))
        with saved_registry(), ray_session("local", num_cpus=2) as ray:
            sweep_faults.register()
            yield ray


@pytest.mark.ray
def test_ray_trials_store_the_same_runs_as_in_process(local_ray, tmp_path):
    store_r, store_i = TraceStore(tmp_path / "ray"), TraceStore(tmp_path / "here")
    configs = ["", "conv2=scale(0.5)"]
    on_ray = es.sweep_edits(configs, seeds=(0,), store=store_r, ray="local", **SMALL)
    here = es.sweep_edits(configs, seeds=(0,), store=store_i, in_process=True, **SMALL)
    assert on_ray.where == "local" and on_ray.trials["status"].tolist() == ["finished"] * 2
    for a, b in zip(on_ray.trials.itertuples(), here.trials.itertuples(), strict=True):
        ra, rb = store_r.watch_run(a.run_id), store_i.watch_run(b.run_id)
        assert ra.status == "finished" and ra.steps == rb.steps == [0, 1, 2, 3]
        assert ra.manifest["meta"]["sweep"]["id"] == on_ray.sweep_id
        assert ra.scalars[["step", "name"]].equals(rb.scalars[["step", "name"]])
        np.testing.assert_array_equal(ra.scalars["value"].to_numpy(),
                                      rb.scalars["value"].to_numpy())
        np.testing.assert_array_equal(ra.events["norm"].to_numpy(), rb.events["norm"].to_numpy())
        assert a.final_accuracy == b.final_accuracy and a.final_loss == b.final_loss
    back = load_sweep(store_r, on_ray.sweep_id).trials
    assert back["run_id"].tolist() == on_ray.trials["run_id"].tolist()
    r = sweep_ratios(store_r, back)
    at0 = r[r.step == 0].set_index("layer")["ratio"]
    assert at0["conv1"] == pytest.approx(0.5, rel=1e-5)
    assert at0[["conv2", "conv3", "fc1", "fc2"]].tolist() == pytest.approx([1.0] * 4, rel=1e-5)


@pytest.mark.ray
def test_a_worker_that_dies_mid_run_is_its_trials_row(local_ray, tmp_path):
    store = TraceStore(tmp_path / "runs")
    result = es.sweep_edits([""], seeds=(0, 1), store=store, ray="local",
                            model="sweep_dying_cnn", **SMALL)
    t = result.trials
    assert t["status"].tolist() == ["finished", "failed"]
    assert "worker" in t["message"][1] and np.isnan(t["final_accuracy"][1])
    ids = [r for r in store.run_ids() if store.manifest(r)["meta"]["sweep"]["id"]
           == result.sweep_id]
    assert sorted(ids) == sorted(t["run_id"])  # one run per trial: nothing stored twice
    assert store.watch_run(t["run_id"][0]).status == "finished"
    assert store.watch_run(t["run_id"][1]).status != "finished"  # its writer died
