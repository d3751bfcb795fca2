"""One trial of an edit sweep: what a worker needs, and nothing of the driver.

A *trial* (:class:`TrialSpec`) is one configuration (an edit text such as
``"conv2=scale(0.5)"``; ``""`` is the no-edit baseline) trained from one seed: the seed's
SimpleCNN (or any zoo / registered model taking 32x32 RGB images) on the shapes set, hooklab's
recipe (Adam, a seeded generator permuting the images every epoch, no activation penalty), every
``every``-th step recorded with :func:`hooklab.watch`. Its run's manifest carries
``meta["sweep"]`` (sweep id, name, trial index, configuration, seed, the whole grid) and the
tags ``sweep`` and the sweep id, so the store alone rebuilds a sweep
(:mod:`hooklab.studies.sweep.store`). The last step's scalars add ``test_acc`` and ``test_loss``
(held-out shapes images): the trial's final accuracy and loss.

:func:`run_trial` trains one trial into ``spec.store`` (from the machine it runs on: on a
cluster the store is a folder every node mounts at the same path); :func:`trial_outcome` turns a
failure into the trial's row (:func:`failed_row`). This module imports nothing else of the sweep
package: :mod:`~hooklab.studies.sweep.run` (the driver) and :mod:`~hooklab.studies.sweep.on_ray`
(Ray Tune) both build on it.

Example:
    >>> spec = plan([""], (0,), store="runs")[0]        # hooklab.studies.sweep.run.plan
    >>> run_trial(spec)["final_accuracy"]
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.core.errors import HooklabError
from hooklab.data import datasets as data_mod
from hooklab.models import registry
from hooklab.models.zoo import get_model
from hooklab.store.runs import TraceStore
from hooklab.store.watch import watch

__all__ = ["SWEEP_TAG", "TRIAL_COLUMNS", "Progress", "SweepError", "SweepResult", "TrialSpec",
           "baseline_label", "failed_row", "run_trial", "trial_batches", "trial_layers",
           "trial_outcome"]

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
