"""Training runs in a store for the Training page and notebooks: which runs of a listing are
trainings (:func:`training_runs`), a cheap version key (:func:`run_version`), and one run's tables
(:func:`open_training`): a streamed :func:`hooklab.watch` run as committed so far, or a one-shot
training trace (its history as scalars).

Example:
    >>> table = training_runs(store.list())                 # newest first, with status
    >>> run = open_training(store, table["run_id"][0])      # events, scalars, steps, status
    >>> run.last                                            # {'loss': (59, 0.41), ...}
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hooklab.store import stream
from hooklab.store.runs import TraceStore
from hooklab.studies.training_views import TRAINING_COLUMNS, last_scalars

__all__ = ["RUN_COLUMNS", "TrainingRun", "training_runs", "history_scalars", "run_version",
           "open_training"]

#: Listing columns of :func:`training_runs`.
RUN_COLUMNS: tuple[str, ...] = ("run_id", "created", "status", "author", "model", "edits",
                                "notes")
#: History columns of a one-shot training trace that are not scalars to plot.
_NOT_SCALARS = ("step", "epoch")


def training_runs(listing: pd.DataFrame) -> pd.DataFrame:
    """The training runs of a store listing (``TraceStore.list()``): runs whose page is
    ``"training"`` (every :func:`hooklab.watch` run), newest first, with :data:`RUN_COLUMNS`.

    ``status`` is ``"live"``, ``"finished"``, ``"failed"``, ``"ended early"`` or
    ``"corrupt: <reason>"`` (the listing's ``"ok"`` reads ``"finished"``).
    """
    if listing is None or listing.empty or "page" not in listing:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    sel = listing[listing["page"].astype(str) == "training"].copy()
    sel["status"] = sel["status"].astype(str).replace({"ok": "finished", "": "finished"})
    for col in RUN_COLUMNS:
        if col not in sel:
            sel[col] = ""
    if "created" in sel and len(sel):
        order = pd.to_datetime(sel["created"], errors="coerce", utc=True, format="mixed")
        sel = sel.assign(_t=order).sort_values("_t", ascending=False, na_position="last",
                                               kind="stable")
    return sel[list(RUN_COLUMNS)].reset_index(drop=True)


def history_scalars(history: object) -> pd.DataFrame:
    """A one-shot training trace's history (``trace.meta["history"]`` of
    :func:`hooklab.studies.train.train_run`: a list of row dicts) as a scalars table
    (``step``, ``name``, ``value``): every numeric column but ``step``/``epoch`` and the
    per-layer norms (those are in the events)."""
    empty = pd.DataFrame({"step": pd.Series(dtype="int64"), "name": pd.Series(dtype="str"),
                          "value": pd.Series(dtype="float64")})
    if not isinstance(history, list) or not history:
        return empty
    df = pd.DataFrame([r for r in history if isinstance(r, dict)])
    if "step" not in df:
        return empty
    names = [c for c in df.columns if c not in _NOT_SCALARS and "grad_norm" not in str(c)
             and pd.api.types.is_numeric_dtype(df[c])]
    if not names:
        return empty
    names.sort(key=lambda n: n != "loss")  # the loss first (stored JSON sorts the keys)
    long = df.melt(id_vars="step", value_vars=names, var_name="name", value_name="value")
    return long.dropna(subset=["value"]).astype(
        {"step": "int64", "name": "str", "value": "float64"}).reset_index(drop=True)


@dataclass
class TrainingRun:
    """A training run's tables for the figures: a streamed :func:`hooklab.watch` run as committed
    so far, or a one-shot training trace (e.g. :func:`hooklab.studies.train.train_run`)."""

    run_id: str
    kind: str  # "watch" (streamed) or "trace" (one-shot)
    status: str  # "live", "finished", "failed" or "ended early"
    manifest: dict
    events: pd.DataFrame  # at least TRAINING_COLUMNS
    scalars: pd.DataFrame  # step, name, value
    steps: list[int]  # recorded steps, ascending

    @property
    def meta(self) -> dict:
        """The run's metadata (model, edits, every, ...)."""
        m = self.manifest.get("meta")
        return dict(m) if isinstance(m, dict) else {}

    @property
    def last(self) -> dict[str, tuple[int, float]]:
        """The user's scalars at their latest step (:func:`last_scalars`)."""
        return last_scalars(self.scalars)

    @property
    def last_step(self) -> int:
        """The latest step with a recording or a scalar (-1 when none)."""
        last = [max(self.steps)] if self.steps else []
        if len(self.scalars):
            last.append(int(self.scalars["step"].max()))
        return max(last) if last else -1


def run_version(store: TraceStore, run_id: str) -> tuple[int, str, int]:
    """A cheap key that changes whenever a training run gets new data: (committed segments,
    status, steps done), from the manifest only."""
    m = store.manifest(run_id)
    if not stream.is_watch(m):
        return (0, "finished", int(m.get("n_events", 0)))
    return (len(m["segments"]), stream.run_status(m), int(m.get("steps_done", 0)))


def open_training(store: TraceStore, run_id: str) -> TrainingRun:
    """The run ``run_id`` of ``store`` as a :class:`TrainingRun` (only the event columns the
    figures read: :data:`TRAINING_COLUMNS`).

    Raises:
        StoreError / CorruptRunError: no such run, or it (a committed segment) is damaged.
    """
    m = store.manifest(run_id)
    if stream.is_watch(m):
        run = stream.open_watch(store, run_id, columns=TRAINING_COLUMNS)
        return TrainingRun(run.run_id, "watch", run.status, run.manifest, run.events,
                           run.scalars, list(run.steps))
    trace = store.load(run_id)
    events = trace.events
    steps = sorted(int(s) for s in pd.unique(events["step"])) if len(events) else []
    return TrainingRun(run_id, "trace", "finished", m, events,
                       history_scalars(trace.meta.get("history")), steps)
