"""An evaluation in the store: a streamed run that grows by one segment per scored chunk.

The run (``eval-<key[:16]>``, ``meta["page"] == "evaluation"``) uses the store's streamed-run
format (:mod:`hooklab.store.stream`): each committed segment holds one chunk's results as
Parquet scalars ``(step, name, value)`` with ``step`` the image index and the names

* ``label``, ``predicted`` (one each per image),
* ``<method>|<layer>|target`` and ``<method>|<layer>|<metric column>`` per method × layer.

A segment's files are fsynced before the manifest naming them is swapped in, so a reader sees
whole chunks only. While scoring, the run is ``live``; a killed writer leaves it ``ended
early`` and an exception leaves it ``failed`` (with the error); only a run whose every chunk is
in has ``status == "finished"``, with the summary table in ``meta["summary"]``. A re-run with
the same arguments reopens an unfinished run, skips the images its segments hold and finishes
it (:func:`hooklab.studies.evaluation.evaluate`).
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hooklab.core.trace import empty_events
from hooklab.recording.watch import Segment
from hooklab.store.runs import TraceStore
from hooklab.store.stream import StreamWriter, is_watch
from hooklab.studies.evaluation.spec import COLUMNS, EvalSpec

__all__ = ["PAGE", "SUMMARY_COLUMNS", "EvaluationResult", "EvaluationWriter", "is_evaluation",
           "read_evaluation", "rows_to_scalars", "scalars_to_rows", "summarise"]

#: ``meta["page"]`` of an evaluation run (the Runs page shows it with the evaluation view).
PAGE = "evaluation"
#: Columns of the summary table.
SUMMARY_COLUMNS = ("method", "layer", "metric", "n", "mean", "sd")
_SEP = "|"


@dataclass
class EvaluationResult:
    """What :func:`hooklab.evaluate` returns.

    Attributes:
        run_id: the stored run.
        per_image: one row per image × method × layer: index, label, target, predicted,
            method, layer and one column per metric value.
        summary: mean and sample standard deviation per method × layer × metric
            (:data:`SUMMARY_COLUMNS`).
        spec: the canonical arguments.
        scored: images scored by this call (0 when the run was already finished).
        skipped: images found already scored in the run (a resumed run).
        notes: what was left out and why (e.g. the pointing game on data without masks).
    """

    run_id: str
    per_image: pd.DataFrame
    summary: pd.DataFrame
    spec: EvalSpec
    scored: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"EvaluationResult({self.run_id!r}, {self.spec.n} images, "
                f"{len(self.spec.pairs)} method x layer, metrics {', '.join(self.spec.metrics)})")


def is_evaluation(manifest: dict[str, Any]) -> bool:
    """True for the manifest of an evaluation run."""
    return is_watch(manifest) and manifest.get("meta", {}).get("page") == PAGE


def rows_to_scalars(rows: pd.DataFrame, spec: EvalSpec) -> pd.DataFrame:
    """The per-image rows of one chunk as the run's ``(step, name, value)`` scalars."""
    parts = []
    first = rows.drop_duplicates("index")
    for col in ("label", "predicted"):
        parts.append(pd.DataFrame({"step": first["index"].to_numpy(), "name": col,
                                   "value": first[col].to_numpy(dtype="float64")}))
    for (method, layer), grp in rows.groupby(["method", "layer"], sort=False):
        for col in ("target", *spec.columns):
            parts.append(pd.DataFrame({"step": grp["index"].to_numpy(),
                                       "name": f"{method}{_SEP}{layer}{_SEP}{col}",
                                       "value": grp[col].to_numpy(dtype="float64")}))
    out = pd.concat(parts, ignore_index=True)
    return out.astype({"step": "int64", "name": str, "value": "float64"})


def scalars_to_rows(scalars: pd.DataFrame, spec: EvalSpec) -> pd.DataFrame:
    """Inverse of :func:`rows_to_scalars` over a whole run (rows sorted by image, then the
    spec's method × layer order). A value stored twice is an error (pivot refuses it)."""
    names = scalars["name"].astype(str)
    per = scalars[names.isin(["label", "predicted"])]
    base = per.assign(name=per["name"].astype(str)).pivot(index="step", columns="name",
                                                          values="value")
    rest = scalars[~names.isin(["label", "predicted"])]
    split = rest["name"].astype(str).str.split(_SEP, n=2, expand=True)
    if rest.empty:
        return pd.DataFrame(columns=[*COLUMNS, *spec.columns])
    long = pd.DataFrame({"index": rest["step"].to_numpy(), "method": split[0].to_numpy(),
                         "layer": split[1].to_numpy(), "col": split[2].to_numpy(),
                         "value": rest["value"].to_numpy()})
    wide = long.pivot(index=["index", "method", "layer"], columns="col",
                      values="value").reset_index()
    wide = wide.merge(base, left_on="index", right_index=True, how="left")
    order = {p: i for i, p in enumerate(spec.pairs)}
    wide["_pair"] = [order.get((m, lay), len(order)) for m, lay in zip(wide["method"],
                                                                        wide["layer"], strict=True)]
    wide = wide.sort_values(["index", "_pair"], kind="stable").reset_index(drop=True)
    for col in ("index", "label", "target", "predicted"):
        wide[col] = wide[col].astype("int64")
    cols = [c for c in spec.columns if c in wide.columns]
    return wide.loc[:, [*COLUMNS, *cols]]


def summarise(per_image: pd.DataFrame, spec: EvalSpec) -> pd.DataFrame:
    """Mean and sample standard deviation per method × layer × metric column."""
    rows = []
    for (method, layer) in spec.pairs:
        grp = per_image[(per_image["method"] == method) & (per_image["layer"] == layer)]
        for col in spec.columns:
            v = grp[col].astype("float64")
            rows.append({"method": method, "layer": layer, "metric": col, "n": int(v.count()),
                         "mean": float(v.mean()) if len(v) else math.nan,
                         "sd": float(v.std(ddof=1)) if v.count() > 1 else math.nan})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _jsonable_summary(summary: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in summary.to_dict("records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in rec.items()})
    return out


class EvaluationWriter(StreamWriter):
    """The store writer of an evaluation run: a :class:`~hooklab.store.stream.StreamWriter`
    that can also reopen an unfinished run and finish with the summary in the manifest."""

    @classmethod
    def reopen(cls, store: TraceStore, manifest: dict[str, Any]) -> EvaluationWriter:
        """Continue the unfinished run of ``manifest`` (marked live again, by this process)."""
        writer = cls(store, manifest["run_id"], author=manifest["author"],
                     notes=manifest["notes"], tags=list(manifest["tags"]),
                     versions=dict(manifest.get("versions", {})))
        m = {**manifest, "status": "live", "error": "",
             "writer": {"pid": os.getpid(), "host": socket.gethostname(),
                        "heartbeat": time.time()}}
        m.pop("ended", None)
        writer._commit_manifest(m)
        return writer

    @property
    def done(self) -> set[int]:
        """Image indices the committed segments hold."""
        return {int(s) for seg in self.manifest["segments"] for s in seg["steps"]}

    def write_rows(self, rows: pd.DataFrame, spec: EvalSpec, done: int) -> None:
        """Commit one chunk's rows as a segment (``done``: images in the run after it)."""
        steps = sorted({int(i) for i in rows["index"]})
        self.write_segment(Segment(steps=steps, events=empty_events(),
                                   scalars=rows_to_scalars(rows, spec), steps_done=done))

    def finish(self, summary: pd.DataFrame, done: int) -> None:
        """Mark the run finished, the summary table in its ``meta["summary"]`` (one commit)."""
        self._manifest = {**self._manifest,
                          "meta": {**self._manifest["meta"],
                                   "summary": _jsonable_summary(summary)}}
        self.close("finished", "", done)


def read_evaluation(store: TraceStore, run_id: str) -> EvaluationResult:
    """An evaluation run as stored (also an unfinished one: the chunks committed so far)."""
    from hooklab.studies.evaluation.spec import EvaluationError

    run = store.watch_run(run_id, columns=["seq"])
    meta = run.meta
    if meta.get("page") != PAGE or "evaluation" not in meta:
        raise EvaluationError(f"run {run_id} is not an evaluation run")
    spec = EvalSpec.from_dict(meta["evaluation"])
    per_image = scalars_to_rows(run.scalars, spec)
    summary = (pd.DataFrame(meta["summary"], columns=list(SUMMARY_COLUMNS))
               .astype({"mean": "float64", "sd": "float64"})
               if "summary" in meta else summarise(per_image, spec))
    return EvaluationResult(run_id, per_image, summary, spec, notes=list(meta.get("notes", [])))
