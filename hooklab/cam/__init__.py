"""The CAM family: methods as pure functions, computing them on a model or a trace, metrics."""

from __future__ import annotations

from hooklab.cam import attention as _attention  # noqa: F401 (registers rollout, legrad)
from hooklab.cam import methods_model, methods_pure, methods_score  # noqa: F401 (they register)
from hooklab.cam.engine import (
    METHODS,
    CamError,
    CamResult,
    CamResults,
    NonSpatialLayerError,
    TokenLayout,
    auto_layer,
    cam_from_trace,
    compute,
    compute_many,
    frozen,
    resize,
)
from hooklab.cam.sweep import auto_target_layer

__all__ = [
    "CamError",
    "CamResult",
    "CamResults",
    "METHODS",
    "NonSpatialLayerError",
    "TokenLayout",
    "auto_layer",
    "auto_target_layer",
    "cam_from_trace",
    "compute",
    "compute_many",
    "frozen",
    "resize",
]
