"""Edit sweeps: a grid of gradient-edit configurations x seeds, each trained with
:func:`hooklab.watch` into the store, in-process or as Ray Tune trials.

One *trial* is one configuration (an edit text such as ``"conv2=scale(0.5)"``; ``""`` is the
no-edit baseline) trained from one seed: the seed's SimpleCNN (or any zoo / registered model
taking 32x32 RGB images) on the shapes set, hooklab's recipe (Adam, a seeded generator permuting
the images every epoch, no activation penalty), every ``every``-th step recorded. Its run's
manifest carries ``meta["sweep"]`` (sweep id, name, trial index, configuration, seed, the whole
grid) and the tags ``sweep`` and the sweep id, so the store alone rebuilds a sweep
(:mod:`hooklab.studies.edit_sweep_store`); there is no separate database. The last step's
scalars add ``test_acc`` and ``test_loss`` (held-out shapes images): the trial's final accuracy
and loss.

**Where trials run.** ``ray="local"`` (the default) starts a Ray on this machine (or joins the
Ray this process already initialised); another address joins that cluster
(:func:`hooklab.studies.cluster.ray_session`); ``ray=None`` or ``in_process=True`` runs the
trials one after another here, without Ray. A trial uses ``cpus_per_trial`` torch threads in
both modes, so the same configuration and seed give the same run contents either way.

**Who writes the store.** Each trial writes its own run straight into the store from the
machine it runs on (streamed: the Training page shows a trial while it trains). On a cluster
the store must therefore be a folder every node sees at the same path (a network drive): the
store's atomic commits are made for writers on several machines. The driver checks that every
trial's run is visible in its store afterwards; a run it cannot see is reported as a failed
trial that names the shared-folder requirement.

**Failures.** A trial that raises (a model that fails at step k, a worker that dies) is one row
with status ``"failed"`` and the message; its run (if it began) is marked failed in the store;
the other trials go on. Bad edit text, an edit naming no layer of the model, or bad sizes raise
before any trial starts.

Example:
    >>> result = sweep_edits(["", "conv2=scale(0.5)"], seeds=(0, 1), steps=40, store="runs")
    >>> result.trials[["config", "seed", "final_accuracy", "status"]]
    >>> load_sweep(TraceStore("runs"), result.sweep_id).trials       # the same, from the store
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.core.edits import describe, normalise_edits
from hooklab.core.errors import EditError, HooklabError
from hooklab.data import datasets as data_mod
from hooklab.models import registry
from hooklab.models.zoo import get_model
from hooklab.recording.recorder import Recorder
from hooklab.store import format as fmt
from hooklab.store.runs import TraceStore
from hooklab.store.watch import watch

__all__ = ["TRIAL_COLUMNS", "SWEEP_TAG", "SweepError", "SweepResult", "TrialSpec", "sweep_edits",
           "run_trial", "trial_outcome", "trial_layers", "baseline_label", "trial_batches"]

log = logging.getLogger(__name__)

#: Columns of :attr:`SweepResult.trials`.
TRIAL_COLUMNS = ("trial", "config", "seed", "run_id", "final_accuracy", "final_loss", "status",
                 "message")
#: Tag every trial run carries (besides the sweep id).
SWEEP_TAG = "sweep"

#: ``progress(trials_done, trials_total, text)``.
Progress = Callable[[int, int, str], Any]


class SweepError(HooklabError, ValueError):
    """A sweep that cannot start (no configurations, bad seeds or sizes)."""


def baseline_label(config: str) -> str:
    """``config`` for display: the empty configuration is ``"no edit"``."""
    return config or "no edit"


@dataclass(frozen=True)
class TrialSpec:
    """One trial, complete: everything a worker needs (JSON-able, sent to Ray as it is)."""

    sweep_id: str            # groups the runs (meta["sweep"]["id"])
    trial: int               # index in the grid (configs outer, seeds inner)
    config: str              # edit text ("" = no edit), canonical (hooklab.core.edits.describe)
    seed: int                # model initialisation and batch order
    run_id: str              # the run this trial writes (assigned by the driver)
    store: str               # absolute store root (shared by every node on a cluster)
    model: str = "simple_cnn"  # zoo or registered model taking (3, 32, 32) images
    steps: int = 40          # optimiser steps
    every: int = 1           # record every k-th step
    lr: float = 2e-3         # Adam learning rate
    batch_size: int = 32     # images per step
    n_train: int = 1024      # shapes training images (data seed 0)
    n_test: int = 256        # held-out shapes images for the final accuracy and loss
    threads: int = 1         # torch threads (= CPUs per trial): the same numbers everywhere
    name: str = ""           # the sweep's name (free text)
    grid: dict[str, Any] = field(default_factory=dict)  # {"configs": [...], "seeds": [...]}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SweepResult:
    """A sweep: its id, the store it wrote to and one row per trial (:data:`TRIAL_COLUMNS`)."""

    sweep_id: str
    trials: pd.DataFrame
    store: str = ""
    name: str = ""
    seconds: float = 0.0
    where: str = "in-process"  # or the Ray address

    @property
    def failed(self) -> pd.DataFrame:
        """The trials that did not finish."""
        return self.trials[self.trials["status"] != "finished"]


def trial_layers(model: nn.Module) -> list[str]:
    """The layers a trial records: every module with parameters of its own, in model order."""
    return [n for n, m in model.named_modules()
            if n and any(True for _ in m.parameters(recurse=False))]


def trial_batches(spec: TrialSpec, images: torch.Tensor, labels: torch.Tensor
                  ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The trial's ``steps`` batches: a generator seeded by ``spec.seed`` permutes the training
    images every epoch (the same batches in every process, for every configuration)."""
    gen = torch.Generator().manual_seed(spec.seed)
    per_epoch = len(images) // spec.batch_size
    order = torch.empty(0, dtype=torch.long)
    for step in range(spec.steps):
        pos = step % per_epoch
        if pos == 0:
            order = torch.randperm(len(images), generator=gen)
        idx = order[pos * spec.batch_size:(pos + 1) * spec.batch_size]
        yield images[idx], labels[idx]


def _build_model(spec: TrialSpec) -> nn.Module:
    registry.load_env()  # a worker imports $HOOKLAB_MODELS itself (forwarded by ray_session)
    return get_model(spec.model, seed=spec.seed, num_classes=len(data_mod.SHAPE_CLASSES))


def run_trial(spec: TrialSpec, *, model: nn.Module | None = None) -> dict[str, Any]:
    """Train one trial under :func:`hooklab.watch` into ``spec.store`` as run ``spec.run_id``.

    Args:
        spec: the trial.
        model: the model to train (default: ``spec.model`` built from ``spec.seed``); its hooks
            and ``training`` flags are as before afterwards, also when the training raises.

    Returns:
        The trial's row (:data:`TRIAL_COLUMNS`, status ``"finished"``) plus ``host``.

    Raises:
        whatever the training raised (the run is then marked failed in the store).
    """
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, spec.threads))
    try:
        return _train(spec, model)
    finally:
        torch.set_num_threads(torch_threads)


def _train(spec: TrialSpec, model: nn.Module | None) -> dict[str, Any]:
    train = data_mod.make_shapes(spec.n_train, 0, "train")
    test = data_mod.make_shapes(spec.n_test, 0, "test") if spec.n_test > 0 else None
    model = _build_model(spec) if model is None else model
    flags = [m.training for m in model.modules()]
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    meta = {"model": spec.model, "data": "shapes",
            "sweep": {"id": spec.sweep_id, "name": spec.name, "trial": spec.trial,
                      "config": spec.config, "seed": spec.seed, "grid": spec.grid},
            "train": {"steps": spec.steps, "batch_size": spec.batch_size,
                      "n_train": spec.n_train, "n_test": spec.n_test, "lr": spec.lr,
                      "seed": spec.seed, "optimizer": "Adam", "threads": spec.threads}}
    test_acc = test_loss = math.nan
    store = TraceStore(spec.store)
    try:
        model.train()
        with watch(model, store, every=spec.every, layers=trial_layers(model),
                   edits=spec.config or None, tags=[SWEEP_TAG, spec.sweep_id],
                   notes=f"sweep {spec.sweep_id} trial {spec.trial}: "
                         f"{baseline_label(spec.config)}, seed {spec.seed}",
                   meta=meta, segment_seconds=2.0, run_id=spec.run_id) as w:
            for step, (x, y) in enumerate(trial_batches(spec, train.images, train.labels)):
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = F.cross_entropy(out, y)
                loss.backward()
                opt.step()
                scalars = {"loss": float(loss.detach()),
                           "acc": float((out.detach().argmax(1) == y).float().mean())}
                if step == spec.steps - 1 and test is not None:
                    test_acc, test_loss = _evaluate(model, test.images, test.labels)
                    scalars.update(test_acc=test_acc, test_loss=test_loss)
                w.step(**scalars)
    finally:
        for m, flag in zip(model.modules(), flags, strict=True):
            m.training = flag
    log.info("sweep %s trial %d (%s, seed %d): test accuracy %.3f", spec.sweep_id, spec.trial,
             baseline_label(spec.config), spec.seed, test_acc)
    return {"trial": spec.trial, "config": spec.config, "seed": spec.seed,
            "run_id": spec.run_id, "final_accuracy": test_acc, "final_loss": test_loss,
            "status": "finished", "message": "", "host": socket.gethostname()}


@torch.no_grad()
def _evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor
              ) -> tuple[float, float]:
    was = [m.training for m in model.modules()]
    model.eval()
    try:
        out = model(images)
        return (float((out.argmax(1) == labels).float().mean()),
                float(F.cross_entropy(out, labels)))
    finally:
        for m, flag in zip(model.modules(), was, strict=True):
            m.training = flag


def failed_row(spec: TrialSpec | dict[str, Any], message: str) -> dict[str, Any]:
    """The row of a trial that did not finish."""
    d = spec.to_dict() if isinstance(spec, TrialSpec) else dict(spec)
    return {"trial": d.get("trial", -1), "config": d.get("config", ""),
            "seed": d.get("seed", -1), "run_id": d.get("run_id", ""),
            "final_accuracy": math.nan, "final_loss": math.nan, "status": "failed",
            "message": " ".join(str(message).split())}


def trial_outcome(spec: TrialSpec) -> dict[str, Any]:
    """:func:`run_trial`, with a failure as a row (status ``"failed"``, the error's message)."""
    try:
        return run_trial(spec)
    except Exception as exc:  # noqa: BLE001 - one trial's failure is that trial's row
        log.warning("sweep %s trial %d failed: %s", spec.sweep_id, spec.trial, exc)
        return failed_row(spec, f"{type(exc).__name__}: {exc}")


# -- the driver -----------------------------------------------------------------------------
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
        from hooklab.studies.edit_sweep_ray import run_on_ray

        rows = run_on_ray(specs, address, cpus_per_trial=cpus_per_trial, num_cpus=ray_cpus,
                          timeout=timeout, progress=progress)
    rows = check_visible(target, rows)
    return SweepResult(specs[0].sweep_id, _table(rows), str(target.root), name or "",
                       time.perf_counter() - t0, address or "in-process")
