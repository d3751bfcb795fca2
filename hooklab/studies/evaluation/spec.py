"""What an evaluation is: its canonical arguments, its key, its metrics, its index chunks.

The key (sha256 of the canonical arguments: model, weights, data, split, n, methods, layers,
metrics, target, steps, batch size, seed) names the run (``eval-<key[:16]>``), so a re-run with
the same arguments finds the run and finishes it. The batch size is part of the key because the
index chunks ``[k·B, (k+1)·B)`` are the unit of work, of storage and of float rounding: the same
chunk scored in-process or on a Ray worker gives the same numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hooklab.cam import engine
from hooklab.cam.methods import method_name
from hooklab.core.errors import HooklabError

__all__ = ["COLUMNS", "METRICS", "METRIC_COLUMNS", "EvaluationError", "EvalSpec", "chunks",
           "metric_names", "method_names", "run_id_for"]

#: Metric names and the per-image columns each one writes (lower is better for
#: ``average_drop``, ``deletion_auc`` and ``road_morf``; higher for the others).
METRICS: dict[str, tuple[str, ...]] = {
    "pointing": ("pointing",),
    "ad_ic": ("average_drop", "increase_confidence"),
    "deletion": ("deletion_auc",),
    "insertion": ("insertion_auc",),
    "road": ("road_morf", "road_lerf", "road_combined"),
}
#: Every metric column, in table order.
METRIC_COLUMNS: tuple[str, ...] = tuple(c for cols in METRICS.values() for c in cols)
#: The identifying columns of the per-image table (one row per image × method × layer).
COLUMNS: tuple[str, ...] = ("index", "label", "target", "predicted", "method", "layer")
#: The default metrics (``pointing`` is left out, with a note, where the data has no masks).
DEFAULT_METRICS = ("pointing", "ad_ic", "deletion", "insertion")
TARGETS = ("predicted", "label")


class EvaluationError(HooklabError, ValueError):
    """An evaluation request is malformed (a metric, a setting) or its run cannot continue."""


def method_names(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Canonical method names, duplicates dropped; an unknown one is one CamError."""
    items = [methods] if isinstance(methods, str) else list(methods)
    if not items:
        raise EvaluationError("methods names no CAM method; give at least one (e.g. gradcam)")
    out: list[str] = []
    for m in items:
        try:
            name = method_name(m)
        except KeyError:
            raise engine.CamError(f"unknown CAM method {m!r}; use one of "
                                  f"{', '.join(engine.METHODS)}") from None
        if name not in out:
            out.append(name)
    return tuple(out)


def metric_names(metrics: Sequence[str] | str) -> tuple[str, ...]:
    """Metric names in :data:`METRICS` order; an unknown one is one EvaluationError."""
    items = [metrics] if isinstance(metrics, str) else list(metrics)
    aliases = {"adic": "ad_ic", "ad": "ad_ic", "ic": "ad_ic", "pointing_game": "pointing",
               "pg": "pointing"}
    wanted = set()
    for m in items:
        key = str(m).strip().lower().replace("-", "_").replace("/", "_")
        key = aliases.get(key.replace("_", ""), key)
        if key not in METRICS:
            raise EvaluationError(f"unknown metric {m!r}; use {', '.join(METRICS)}")
        wanted.add(key)
    if not wanted:
        raise EvaluationError(f"metrics names no metric; use some of {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in wanted)


@dataclass(frozen=True)
class EvalSpec:
    """The canonical arguments of one evaluation (plain data: it travels to workers).

    Attributes:
        model: the zoo (or registered) model name; ``""`` for a model object passed in.
        model_hash: sha256 of a passed model's class and state dict (``""`` for a name).
        weights: ``weights=`` of :func:`hooklab.models.zoo.get_model` (a name's weights).
        data: the source's canonical name (:mod:`hooklab.data.sources`).
        split: the split.
        n: images evaluated (indices ``0 .. n-1``).
        data_seed: the shapes generator's seed (the ``seed`` argument).
        methods: canonical CAM method names.
        layers: resolved target layer names (each mapped on its own).
        metrics: metric names (:data:`METRICS`).
        target: ``"predicted"`` (each image's predicted class) or ``"label"``.
        steps: deletion / insertion steps.
        batch_size: images per chunk.
        seed: seed of the metrics' random parts (deletion ties, ROAD noise).
    """

    model: str
    model_hash: str
    weights: str
    data: str
    split: str
    n: int
    data_seed: int
    methods: tuple[str, ...]
    layers: tuple[str, ...]
    metrics: tuple[str, ...]
    target: str = "predicted"
    steps: int = 32
    batch_size: int = 32
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("methods", "layers", "metrics"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalSpec:
        d = dict(d)
        for k in ("methods", "layers", "metrics"):
            d[k] = tuple(d[k])
        return cls(**d)

    @property
    def key(self) -> str:
        """sha256 of the canonical arguments (hex)."""
        raw = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def columns(self) -> tuple[str, ...]:
        """The metric columns this evaluation writes."""
        return tuple(c for m in self.metrics for c in METRICS[m])

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """``(method, layer)`` pairs, method-major."""
        return [(m, lay) for m in self.methods for lay in self.layers]


def run_id_for(spec: EvalSpec) -> str:
    """The run id of an evaluation: ``eval-`` and the first 16 hex digits of its key."""
    return f"eval-{spec.key[:16]}"


def chunks(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The index chunks ``[(0, B), (B, 2B), ..., (kB, n)]``: the unit of work and storage."""
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
