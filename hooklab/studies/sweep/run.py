"""Edit sweeps, the driver: a grid of gradient-edit configurations x seeds, each trial trained
with :func:`hooklab.watch` into the store, in-process or as Ray Tune trials (:func:`sweep_edits`).

**Where trials run.** ``ray="local"`` (the default) starts a Ray on this machine (or joins the
Ray this process already initialised); another address joins that cluster
(:func:`hooklab.studies.cluster.ray_session`); ``ray=None`` or ``in_process=True`` runs the
trials one after another here, without Ray. A trial uses ``cpus_per_trial`` torch threads in
both modes, so the same configuration and seed give the same run contents either way.

**Who writes the store.** Each trial writes its own run straight into the store from the
machine it runs on (streamed: the Training page shows a trial while it trains). On a cluster
the store must therefore be a folder every node sees at the same path (a network drive): the
store's atomic commits are made for writers on several machines. The driver checks that every
trial's run is visible in its store afterwards (:func:`check_visible`); a run it cannot see is
reported as a failed trial that names the shared-folder requirement.

**Failures.** A trial that raises (a model that fails at step k, a worker that dies) is one row
with status ``"failed"`` and the message; its run (if it began) is marked failed in the store;
the other trials go on. Bad edit text, an edit naming no layer of the model, or bad sizes raise
before any trial starts (:func:`plan`).

Imports: :mod:`~hooklab.studies.sweep.trial`, and :mod:`~hooklab.studies.sweep.on_ray` inside
:func:`sweep_edits` only (Ray is optional); neither imports this module.

Example:
    >>> result = sweep_edits(["", "conv2=scale(0.5)"], seeds=(0, 1), steps=40, store="runs")
    >>> result.trials[["config", "seed", "final_accuracy", "status"]]
    >>> load_sweep(TraceStore("runs"), result.sweep_id).trials       # the same, from the store
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hooklab.core.edits import describe, normalise_edits
from hooklab.core.errors import EditError
from hooklab.data import datasets as data_mod
from hooklab.models import registry
from hooklab.models.zoo import get_model
from hooklab.recording.recorder import Recorder
from hooklab.store import format as fmt
from hooklab.store.runs import TraceStore
from hooklab.studies.sweep.trial import (
    TRIAL_COLUMNS,
    Progress,
    SweepError,
    SweepResult,
    TrialSpec,
    baseline_label,
    failed_row,
    trial_layers,
    trial_outcome,
)

__all__ = ["check_visible", "plan", "sweep_edits"]

log = logging.getLogger(__name__)


def _configs(configs: Sequence[Any] | str) -> list[str]:
    if isinstance(configs, str):
        configs = [configs]
    out: list[str] = []
    for i, c in enumerate(configs):
        try:
            text = describe(normalise_edits(c))
        except EditError as exc:
            raise EditError(f"configuration {i + 1} ({c!r}): {exc}") from exc
        if text in out:
            raise SweepError(f"configuration {baseline_label(text)!r} is given twice")
        out.append(text)
    if not out:
        raise SweepError("a sweep needs at least one configuration ('' is the no-edit "
                         "baseline)")
    return out


def _seeds(seeds: Iterable[int] | int) -> list[int]:
    items = [seeds] if isinstance(seeds, int) else list(seeds)
    if not items or any(isinstance(s, bool) or not isinstance(s, int) for s in items):
        raise SweepError(f"seeds must be one or more integers, got {seeds!r}")
    if len(set(items)) != len(items):
        raise SweepError(f"seeds repeat: {items}")
    return items


def _positive(**values: Any) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SweepError(f"{name} must be a positive integer, got {v!r}")


def _check_layers(model_name: str, configs: list[str]) -> None:
    """Build the model once here: an edit naming no layer of it fails before any trial."""
    registry.load_env()
    model = get_model(model_name, seed=0, num_classes=len(data_mod.SHAPE_CLASSES))
    for config in configs:
        if config:
            Recorder(model, trial_layers(model), edits=config, inputs=False,
                     keep_tensors=False)  # resolves the layers; registers no hook


def plan(configs: Sequence[Any] | str, seeds: Iterable[int] | int = (0,), *, store: str,
         steps: int = 40, model: str = "simple_cnn", every: int = 1, lr: float = 2e-3,
         batch_size: int = 32, n_train: int = 1024, n_test: int = 256, threads: int = 1,
         name: str | None = None, check_layers: bool = True) -> list[TrialSpec]:
    """The trials of a sweep (configurations outer, seeds inner), validated; nothing runs."""
    texts, seed_list = _configs(configs), _seeds(seeds)
    _positive(steps=steps, every=every, batch_size=batch_size, n_train=n_train,
              cpus_per_trial=threads)
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 0:
        raise SweepError(f"n_test must be 0 or more images, got {n_test!r}")
    if batch_size > n_train:
        raise SweepError(f"batch_size {batch_size} exceeds n_train {n_train}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise SweepError(f"lr must be a positive number, got {lr!r}")
    if check_layers:
        _check_layers(model, texts)
    base = fmt.new_run_id()
    sweep_id = f"sweep-{base}"
    grid = {"configs": texts, "seeds": seed_list}
    specs: list[TrialSpec] = []
    for config in texts:
        for seed in seed_list:
            i = len(specs)
            specs.append(TrialSpec(sweep_id=sweep_id, trial=i, config=config, seed=seed,
                                   run_id=f"{base}-t{i:03d}", store=store, model=model,
                                   steps=steps, every=every, lr=float(lr),
                                   batch_size=batch_size, n_train=n_train, n_test=n_test,
                                   threads=threads, name=name or "", grid=grid))
    return specs


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    return df.sort_values("trial", kind="stable").reset_index(drop=True).astype(
        {"trial": "int64", "seed": "int64", "final_accuracy": "float64",
         "final_loss": "float64"})


def check_visible(store: TraceStore, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose run this machine cannot see in ``store`` become failed rows that say why
    (a trial on another node wrote into a folder that is not shared)."""
    out = []
    for row in rows:
        if row["status"] == "finished" and not store.exists(row["run_id"]):
            where = row.get("host") or "a worker"
            row = failed_row(row, (
                f"the trial finished on {where} but its run {row['run_id']} is not in "
                f"{store.root} as this machine sees it: on a cluster the store must be a "
                "folder every node mounts at the same path (--store / $HOOKLAB_STORE)"))
        out.append(row)
    return out


def sweep_edits(configs: Sequence[Any] | str, seeds: Iterable[int] | int = (0,), *,
                steps: int = 40, model: str = "simple_cnn",
                store: TraceStore | str | os.PathLike[str] | None = None,
                ray: str | None = "local", in_process: bool = False, every: int = 1,
                lr: float = 2e-3, cpus_per_trial: int = 1, name: str | None = None,
                batch_size: int = 32, n_train: int = 1024, n_test: int = 256,
                ray_cpus: int | None = None, timeout: float = 20.0,
                progress: Progress | None = None) -> SweepResult:
    """Train every configuration x seed under :func:`hooklab.watch`, one stored run per trial.

    Args:
        configs: edit configurations, each an edit text (``"conv2=scale(0.5)"``, several
            separated by ``;``) or any form :func:`hooklab.record` accepts; ``""`` / ``None``
            is the no-edit baseline (the per-layer ratios compare against it).
        seeds: model initialisation and batch-order seeds; every configuration runs each.
        steps: optimiser steps per trial.
        model: a zoo or registered model taking 32x32 RGB images.
        store: where the runs go (a TraceStore, a folder, ``None``: ``$HOOKLAB_STORE``).
        ray: ``"local"`` (default: a Ray started here, or the one already initialised), a
            cluster address, or ``None`` (in-process).
        in_process: run the trials here one after another, without Ray.
        every: record every ``every``-th step.
        lr: Adam learning rate.
        cpus_per_trial: CPUs (and torch threads) per trial.
        name: free text naming the sweep.
        batch_size, n_train, n_test: the shapes data of each trial.
        ray_cpus: CPUs of a local Ray (default: this machine's).
        timeout: seconds to wait for a Ray cluster that does not answer.
        progress: called as ``progress(done, total, text)`` after each trial.

    Returns:
        A :class:`SweepResult`; failed trials are rows with status ``"failed"``.

    Raises:
        EditError, LayerNotFoundError, SweepError: bad configurations or sizes (before any
            trial starts).
        ClusterError: Ray is not installed, or the cluster does not answer within ``timeout``.
    """
    target = store if isinstance(store, TraceStore) else TraceStore(store)
    specs = plan(configs, seeds, store=str(Path(target.root).resolve()), steps=steps,
                 model=model, every=every, lr=lr, batch_size=batch_size, n_train=n_train,
                 n_test=n_test, threads=cpus_per_trial, name=name)
    address = None if in_process else ray
    t0 = time.perf_counter()
    log.info("sweep %s: %d trials (%s)", specs[0].sweep_id, len(specs),
             address or "in-process")
    if address is None:
        rows = []
        for spec in specs:
            rows.append(trial_outcome(spec))
            if progress is not None:
                progress(len(rows), len(specs), f"trial {spec.trial}: "
                         f"{baseline_label(spec.config)}, seed {spec.seed}")
    else:
        from hooklab.studies.sweep.on_ray import run_on_ray

        rows = run_on_ray(specs, address, cpus_per_trial=cpus_per_trial, num_cpus=ray_cpus,
                          timeout=timeout, progress=progress)
    rows = check_visible(target, rows)
    return SweepResult(specs[0].sweep_id, _table(rows), str(target.root), name or "",
                       time.perf_counter() - t0, address or "in-process")
