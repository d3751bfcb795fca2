"""AppTest of the Runs page's edit-sweep view on a store holding two small in-process sweeps (one
with failing trials): the picker lists both, the trials table, the accuracy points and the
ratio lines equal what the store gives (load_sweep, sweep_ratios), a trial's run preselects its
sweep, failed trials are said; no exception, no error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hooklab.store.runs import TraceStore
from hooklab.studies.sweep import load_sweep, sweep_edits, sweep_ratios
from hooklab.testing import sweep_faults
from tests.dashboard.conftest import figures, plotly_array, run_page
from tests.models.registry_helpers import saved_registry

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "runs.py")
TIMEOUT = 120
SMALL = {"steps": 4, "n_train": 64, "batch_size": 16, "n_test": 32, "in_process": True}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """(store root, the halving sweep's id, the failing sweep's id); built once, they train."""
    root = tmp_path_factory.mktemp("sweep-view") / "runs"
    store = TraceStore(root)
    halving = sweep_edits(["", "conv2=scale(0.5)"], seeds=(0, 1), store=store,
                          name="halve <b>conv2</b>", **SMALL)
    with pytest.MonkeyPatch.context() as mp, saved_registry():
        mp.setenv("HOOKLAB_MODELS", sweep_faults.MODULE)
        sweep_faults.register()
        failing = sweep_edits(["", "conv1=zero()"], seeds=(0, 1), store=store,
                              model="sweep_raising_cnn", **SMALL)
    assert list(failing.trials["status"]) == ["finished", "failed", "finished", "failed"]
    return root, halving.sweep_id, failing.sweep_id


@pytest.fixture
def store_env(sweeps, monkeypatch):
    root, halving, failing = sweeps
    monkeypatch.setenv("HOOKLAB_STORE", str(root))
    from dashboard import state

    state.store.clear()
    yield TraceStore(root), halving, failing
    state.store.clear()


def _picker(at):
    (box,) = [s for s in at.selectbox if s.label == "Sweep"]
    return box


def _trials_frame(at):
    (df,) = [d.value for d in at.dataframe if "final_accuracy" in d.value.columns]
    return df


def _sweep_figures(at):
    acc = [f for f in figures(at) if "accuracy per configuration" in f["layout"].get("title", {}).get("text", "")]
    ratio = [f for f in figures(at) if "norm ratio" in f["layout"].get("title", {}).get("text", "")]
    return acc, ratio


def test_the_picked_sweep_shows_the_stored_trials_accuracy_and_ratios(store_env):
    store, halving, failing = store_env
    at = run_page(PAGE, TIMEOUT)
    assert not at.exception and not at.error
    assert "Edit sweeps" in [s.value for s in at.subheader]
    box = _picker(at)
    assert len(box.options) == 2 and box.value == failing  # newest first
    assert any(o.startswith(f"{halving} · halve <b>conv2</b> · simple_cnn, 2 × 2")
               for o in box.options)  # options are plain text
    at = box.set_value(halving).run()
    assert not at.exception and not at.error
    stored = load_sweep(store, halving).trials
    shown = _trials_frame(at)
    assert list(shown["run_id"]) == list(stored["run_id"])
    assert list(shown["config"]) == ["no edit", "no edit", "conv2=scale(0.5)", "conv2=scale(0.5)"]
    assert list(shown["seed"]) == [0, 1, 0, 1] and set(shown["status"]) == {"finished"}
    np.testing.assert_array_equal(shown["final_accuracy"].to_numpy(),
                                  stored["final_accuracy"].to_numpy())
    np.testing.assert_array_equal(shown["final_loss"].to_numpy(), stored["final_loss"].to_numpy())
    assert not [w for w in at.warning if "did not finish" in w.value]

    (acc,), (ratio,) = _sweep_figures(at)
    points = {(x, round(float(y), 5)) for tr in acc["data"]
              for x, y in zip(tr["x"], plotly_array(tr["y"]), strict=True)}
    assert points == {("no edit" if c == "" else c, round(float(np.float32(a)), 5))
                      for c, a in zip(stored["config"], stored["final_accuracy"], strict=True)}
    want = sweep_ratios(store, stored)
    lines = [tr for tr in ratio["data"] if tr["type"] == "scatter"]
    assert len(lines) == want["layer"].nunique() * want["trial"].nunique()
    first = want[(want["layer"] == want["layer"].iloc[0]) & (want["trial"] == 2)]
    np.testing.assert_allclose(plotly_array(lines[0]["y"]), first["ratio"].to_numpy(),
                               rtol=1e-6)
    # the seed's halving: conv2's edit halves conv1's output gradient at step 0
    conv1 = want[(want["layer"] == "conv1") & (want["step"] == 0)]
    np.testing.assert_allclose(conv1["ratio"].to_numpy(), 0.5, rtol=1e-5)
    assert ratio["layout"]["yaxis"]["type"] == "log"


def test_a_trial_run_preselects_its_sweep_and_failed_trials_are_said(store_env):
    store, halving, failing = store_env
    trials = load_sweep(store, failing).trials
    failed_run = trials.loc[trials["status"] == "failed", "run_id"].iloc[0]
    at = run_page(PAGE, TIMEOUT, run=failed_run)
    assert not at.exception and not at.error
    assert _picker(at).value == failing
    (warning,) = [w.value for w in at.warning if "did not finish" in w.value]
    assert warning.startswith("2 of 4 trials did not finish")
    shown = _trials_frame(at)
    assert list(shown["status"]) == list(trials["status"])
    assert shown.loc[shown["status"] == "failed", "message"].str.contains("injected fault").all()
    assert shown.loc[shown["status"] == "failed", "final_accuracy"].isna().all()
    (acc,), _ = _sweep_figures(at)
    assert sum(len(tr["x"]) for tr in acc["data"]) == 2  # the two finished trials only

    at = run_page(PAGE, TIMEOUT, run=trials["run_id"].iloc[0])
    assert _picker(at).value == failing
    at = run_page(PAGE, TIMEOUT, run=load_sweep(store, halving).trials["run_id"].iloc[2])
    assert _picker(at).value == halving


def test_a_store_without_sweeps_says_how_to_make_one(store_dir):
    at = run_page(PAGE, TIMEOUT)
    assert not at.exception and not at.error
    assert not [s for s in at.selectbox if s.label == "Sweep"]
    assert any("No edit sweeps yet" in c.value and "hooklab sweep run" in c.value
               for c in at.caption)
