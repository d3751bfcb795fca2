"""Edit sweeps: a grid of gradient-edit configurations x seeds trained with :func:`hooklab.watch`,
in-process or as Ray Tune trials, one stored run per trial (:func:`sweep_edits`;
``hooklab sweep``).

``trial`` (one trial: :class:`TrialSpec`, run it, its row; everything a worker needs), ``run``
(the driver: plan the grid, run it here or on Ray, check every run is visible), ``on_ray``
(Ray Tune's grid search; imports only ``trial`` and the cluster seam), ``store`` (a sweep read
back from the store alone: :func:`list_sweeps`, :func:`load_sweep`, :func:`sweep_ratios`).
"""

from __future__ import annotations

from hooklab.studies.sweep.run import check_visible, plan, sweep_edits
from hooklab.studies.sweep.store import (
    RATIO_COLUMNS,
    SWEEP_COLUMNS,
    list_sweeps,
    load_sweep,
    sweep_meta,
    sweep_ratios,
)
from hooklab.studies.sweep.trial import (
    SWEEP_TAG,
    TRIAL_COLUMNS,
    SweepError,
    SweepResult,
    TrialSpec,
    baseline_label,
    run_trial,
)

__all__ = ["RATIO_COLUMNS", "SWEEP_COLUMNS", "SWEEP_TAG", "TRIAL_COLUMNS", "SweepError",
           "SweepResult", "TrialSpec", "baseline_label", "check_visible", "list_sweeps",
           "load_sweep", "plan", "run_trial", "sweep_edits", "sweep_meta", "sweep_ratios"]
