"""Dataset-wide CAM evaluation, in-process or on Ray (:func:`evaluate`; ``hooklab evaluate``).

``spec`` (canonical arguments, key, metrics, chunks), ``scorer`` (the model and data held once,
one chunk scored per call), ``on_ray`` (Ray Data ``map_batches`` with an actor pool),
``results`` (the run in the store, the per-image and summary tables), ``run`` (:func:`evaluate`).
"""

from __future__ import annotations

from hooklab.studies.evaluation.results import (
    SUMMARY_COLUMNS,
    EvaluationResult,
    is_evaluation,
    read_evaluation,
)
from hooklab.studies.evaluation.run import evaluate
from hooklab.studies.evaluation.spec import METRIC_COLUMNS, METRICS, EvalSpec, EvaluationError

__all__ = ["METRICS", "METRIC_COLUMNS", "SUMMARY_COLUMNS", "EvalSpec", "EvaluationError",
           "EvaluationResult", "evaluate", "is_evaluation", "read_evaluation"]
