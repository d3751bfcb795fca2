"""Edit sweeps read back from the store: the store alone rebuilds them (no separate database).

A sweep is the set of training runs whose ``meta["sweep"]["id"]`` names it
(:mod:`hooklab.studies.sweep.run` writes one run per trial). :func:`list_sweeps` lists the
sweeps of a store, :func:`load_sweep` rebuilds one sweep's trials table (final accuracy and loss
from the runs' last ``test_acc`` / ``test_loss`` scalars, status and error from the runs; a
trial of the grid with no run is ``"missing"``), and :func:`sweep_ratios` gives every trial's
per-layer gradient-norm ratio over training against the no-edit trial of the same seed (what
the Runs page's sweep view draws, :mod:`hooklab.charts.trials`).

Example:
    >>> list_sweeps(store)                                   # one row per sweep, newest first
    >>> result = load_sweep(store, "sweep-20261202-081500-1a2b3c4d")
    >>> sweep_ratios(store, result.trials)                   # trial, layer, step, ratio
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from hooklab.core.errors import HooklabError, StoreError
from hooklab.store import stream
from hooklab.store.runs import TraceStore
from hooklab.studies.sweep.trial import TRIAL_COLUMNS, SweepResult
from hooklab.studies.training_views import TRAINING_COLUMNS, ratio_matrix

__all__ = ["SWEEP_COLUMNS", "RATIO_COLUMNS", "sweep_meta", "list_sweeps", "load_sweep",
           "sweep_ratios"]

log = logging.getLogger(__name__)

#: Columns of :func:`list_sweeps`.
SWEEP_COLUMNS = ("sweep_id", "name", "created", "model", "steps", "configs", "seeds", "runs",
                 "finished")
#: Columns of :func:`sweep_ratios`.
RATIO_COLUMNS = ("trial", "config", "seed", "layer", "step", "ratio")


def sweep_meta(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """A run's ``meta["sweep"]`` when it is a sweep trial (has a string id), else None."""
    meta = manifest.get("meta")
    sw = meta.get("sweep") if isinstance(meta, dict) else None
    if isinstance(sw, dict) and isinstance(sw.get("id"), str) and sw["id"]:
        return sw
    return None


def _trial_manifests(store: TraceStore) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(manifest, sweep meta) of every readable training run that is a sweep trial."""
    listing = store.list()
    out = []
    rows = listing[(listing["page"] == "training")
                   & ~listing["status"].astype(str).str.startswith("corrupt")]
    for rid in rows["run_id"]:
        try:
            m = store.manifest(rid)
        except (StoreError, HooklabError) as exc:
            log.warning("sweeps: skipping run %s: %s", rid, exc)
            continue
        sw = sweep_meta(m)
        if sw is not None:
            out.append((m, sw))
    return out


def list_sweeps(store: TraceStore) -> pd.DataFrame:
    """One row per sweep in ``store`` (:data:`SWEEP_COLUMNS`), newest first."""
    groups: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for m, sw in _trial_manifests(store):
        groups.setdefault(sw["id"], []).append((m, sw))
    rows = []
    for sid, items in groups.items():
        m0, sw0 = min(items, key=lambda it: str(it[0].get("created", "")))
        grid: dict[str, Any] = sw0["grid"] if isinstance(sw0.get("grid"), dict) else {}
        train = m0.get("meta", {}).get("train", {})
        rows.append({
            "sweep_id": sid, "name": str(sw0.get("name", "")),
            "created": str(m0.get("created", "")),
            "model": str(m0.get("meta", {}).get("model", "")),
            "steps": int(train.get("steps", 0)) if isinstance(train, dict) else 0,
            "configs": len(grid.get("configs", [])), "seeds": len(grid.get("seeds", [])),
            "runs": len(items),
            "finished": sum(stream.run_status(m) == "finished" for m, _ in items)})
    df = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    if len(df):
        df = df.sort_values(["created", "sweep_id"], ascending=False, kind="stable")
    return df.reset_index(drop=True)


def _last(scalars: pd.DataFrame, name: str) -> float:
    rows = scalars[scalars["name"].astype(str) == name]
    return float(rows["value"].iloc[-1]) if len(rows) else math.nan


def load_sweep(store: TraceStore, sweep_id: str) -> SweepResult:
    """The sweep ``sweep_id`` of ``store``, rebuilt from its runs (:data:`TRIAL_COLUMNS`).

    Raises:
        StoreError: no run of ``store`` belongs to that sweep.
    """
    items = [(m, sw) for m, sw in _trial_manifests(store) if sw["id"] == sweep_id]
    if not items:
        raise StoreError(f"no sweep {sweep_id!r} in {store.root} (hooklab sweep list shows "
                         "the sweeps there)")
    rows: list[dict[str, Any]] = []
    grid: dict[str, Any] = {}
    name = ""
    for m, sw in items:
        rid = m["run_id"]
        grid = sw["grid"] if isinstance(sw.get("grid"), dict) else grid
        name = str(sw.get("name", "")) or name
        try:
            run = stream.open_watch(store, rid, columns=["seq", "step"])
            status, message = run.status, run.error
            acc, loss = _last(run.scalars, "test_acc"), _last(run.scalars, "test_loss")
        except (StoreError, HooklabError) as exc:
            status, message, acc, loss = "corrupt", str(exc), math.nan, math.nan
        rows.append({"trial": int(sw.get("trial", -1)), "config": str(sw.get("config", "")),
                     "seed": int(sw.get("seed", -1)), "run_id": rid, "final_accuracy": acc,
                     "final_loss": loss, "status": status, "message": message})
    seen = {(r["config"], r["seed"]) for r in rows}
    configs, seeds = list(grid.get("configs", [])), list(grid.get("seeds", []))
    for i, (config, seed) in enumerate((c, s) for c in configs for s in seeds):
        if (config, seed) not in seen:
            rows.append({"trial": i, "config": config, "seed": seed, "run_id": "",
                         "final_accuracy": math.nan, "final_loss": math.nan,
                         "status": "missing", "message": "no run of this trial in the store"})
    df = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS)).sort_values(
        ["trial", "run_id"], kind="stable").reset_index(drop=True)
    return SweepResult(sweep_id, df, str(store.root), name)


def sweep_ratios(store: TraceStore, trials: pd.DataFrame, role: str = "grad_output"
                 ) -> pd.DataFrame:
    """Per-layer norm ratio trial / baseline over the steps both recorded, for every trial
    with an edit whose seed has a no-edit trial (:func:`ratio_matrix`; NaN where the baseline's
    norm is 0 or a value is missing). Long table, :data:`RATIO_COLUMNS`.
    """
    usable = trials[(trials["run_id"].astype(str) != "")
                    & trials["status"].isin(["finished", "failed", "live", "ended early"])]
    events: dict[str, pd.DataFrame] = {}

    def ev(rid: str) -> pd.DataFrame:
        if rid not in events:
            events[rid] = stream.open_watch(store, rid, columns=TRAINING_COLUMNS).events
        return events[rid]

    parts = []
    for seed, group in usable.groupby("seed", sort=True):
        base = group[group["config"] == ""]
        if base.empty:
            continue
        base_id = str(base["run_id"].iloc[0])
        for row in group[group["config"] != ""].itertuples(index=False):
            r = ratio_matrix(ev(base_id), ev(str(row.run_id)), role)
            if r.empty:
                continue
            long = r.stack(future_stack=True).rename("ratio").reset_index()
            long.insert(0, "seed", int(str(seed)))
            long.insert(0, "config", row.config)
            long.insert(0, "trial", int(row.trial))
            parts.append(long)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            RATIO_COLUMNS, ("int64", "str", "int64", "str", "int64", "float64"), strict=True)})
    out = pd.concat(parts, ignore_index=True)[list(RATIO_COLUMNS)]
    return out.astype({"trial": "int64", "seed": "int64", "step": "int64",
                       "ratio": np.float64}).sort_values("trial", kind="stable"
                                                         ).reset_index(drop=True)
