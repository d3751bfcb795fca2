"""The trials of an edit sweep as a Ray Tune grid search (:func:`run_on_ray`).

One Tune trial per :class:`~hooklab.studies.sweep.trial.TrialSpec` (``tune.grid_search`` over the
specs, so the grid order and the run ids are the driver's), each with ``cpus_per_trial`` CPUs;
Tune runs as many at once as the cluster has CPUs for. A trial writes its run into the store
itself and reports its row (:func:`~hooklab.studies.sweep.trial.trial_outcome`); a trial whose
worker dies, or that Tune cannot start, is a failed row with the error's last line (it is not
retried: a retry would write the same run id again). Worker processes are reused between trials
(``reuse_actors=True``: a process imports torch and hooklab once and trains its trials one after
another; each trial builds its own model, data and thread count, so reuse changes no number; on
2 CPUs it took a 4-trial sweep from 75 s to 50 s). Tune's own
experiment folder is a temporary folder of the driver, removed afterwards (nothing of Tune's is
kept: the store holds the sweep).

Ray is imported inside the functions only (it is optional). Imports only
:mod:`hooklab.studies.sweep.trial` and :mod:`hooklab.studies.cluster`, never the driver.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from hooklab.studies.cluster import ClusterError, ray_available, ray_session
from hooklab.studies.sweep.trial import (
    TrialSpec,
    baseline_label,
    failed_row,
    trial_outcome,
)

__all__ = ["run_on_ray", "tune_trial"]

log = logging.getLogger(__name__)

#: Tune's new console output engine is turned off in the driver (the CLI prints its own table).
_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0"}
#: The one metric a trial reports: its row as JSON (Tune adds keys of its own, e.g. "config").
ROW_METRIC = "hooklab_trial"


def tune_trial(params: dict[str, Any]) -> None:
    """The Tune trainable: run one trial, report its row (Tune's final result)."""
    from ray import tune

    spec = TrialSpec(**params["trial"])
    tune.report({ROW_METRIC: json.dumps(trial_outcome(spec))})


def _error_line(error: Any) -> str:
    text = str(error).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(error).__name__


def run_on_ray(specs: Sequence[TrialSpec], address: str, *, cpus_per_trial: int = 1,
               num_cpus: int | None = None, timeout: float = 20.0,
               progress: Callable[[int, int, str], Any] | None = None
               ) -> list[dict[str, Any]]:
    """Run ``specs`` as Ray Tune trials on ``address`` (``"local"``: a Ray started here with
    ``num_cpus``); returns one row per spec, in grid order.

    Raises:
        ClusterError: Ray is not installed, or the cluster does not answer.
    """
    if not ray_available():
        raise ClusterError("Ray is not installed: pip install 'hooklab[ray]', or run the "
                           "trials one after another with --in-process (in_process=True)")
    saved = {k: os.environ.get(k) for k in _TUNE_ENV}
    os.environ.update(_TUNE_ENV)
    tmp = tempfile.mkdtemp(prefix="hooklab-tune-")
    try:
        with ray_session(address, num_cpus=num_cpus, timeout=timeout):
            return _fit(specs, tmp, cpus_per_trial, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fit(specs: Sequence[TrialSpec], storage: str, cpus_per_trial: int,
         progress: Callable[[int, int, str], Any] | None) -> list[dict[str, Any]]:
    from ray import tune

    total = len(specs)
    done: list[int] = []

    class _Progress(tune.Callback):
        def _tick(self, trial: Any, what: str) -> None:
            d = trial.config.get("trial", {})
            done.append(1)
            if progress is not None:
                progress(len(done), total, f"trial {d.get('trial')}: "
                         f"{baseline_label(d.get('config', ''))}, seed {d.get('seed')} {what}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any
                              ) -> None:
            self._tick(trial, "done")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any
                           ) -> None:
            self._tick(trial, "failed")

    tuner = tune.Tuner(
        tune.with_resources(tune_trial, {"cpu": cpus_per_trial}),
        param_space={"trial": tune.grid_search([s.to_dict() for s in specs])},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(name=specs[0].sweep_id, storage_path=storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  callbacks=[_Progress()]))
    grid = tuner.fit()
    by_trial: dict[int, dict[str, Any]] = {}
    for i_result in range(len(grid)):
        result = grid[i_result]
        d = (result.config or {}).get("trial", {})
        i = int(d.get("trial", -1))
        row = (result.metrics or {}).get(ROW_METRIC)
        if result.error is not None or not isinstance(row, str):
            why = _error_line(result.error) if result.error is not None else "no result"
            log.warning("sweep trial %d failed on Ray: %s", i, why)
            by_trial[i] = failed_row(d, f"the trial's worker failed: {why}")
        else:
            by_trial[i] = json.loads(row)
    return [by_trial.get(s.trial) or failed_row(s, "Tune returned no result for this trial")
            for s in specs]
