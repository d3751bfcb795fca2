"""A short demo training recorded with :func:`hooklab.watch`, so the Training page (and a
notebook) has something to show on a fresh install.

The seed's SimpleCNN on the shapes set (:func:`hooklab.data.datasets.make_shapes`), hooklab's
training recipe (:class:`hooklab.studies.train.TrainConfig` defaults: Adam, ``lr`` 2e-3, a seeded
generator permuting the images every epoch, no activation penalty here), every step recorded.
:func:`demo_pair` trains it twice from the same seed and batch order: no edit, and
``conv2=scale(0.5)``; at step 0 both runs have the same weights and batch, so the per-layer
gradient ratio B / A is exactly 0.5 upstream of conv2 (the seed's halving), then they diverge.

Example:
    >>> store = hooklab.TraceStore("runs")
    >>> a, b = demo_pair(store, steps=60)                     # two watch runs, ~10 s on 2 cores
    >>> run = store.watch_run(b)
    >>> run.scalar("loss").tail(3)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hooklab.core.edits import EditsArg, describe
from hooklab.data import datasets as data_mod
from hooklab.models.zoo import get_model
from hooklab.store.access import Identity
from hooklab.store.runs import TraceStore
from hooklab.store.watch import watch
from hooklab.studies.train import TrainConfig

__all__ = ["DEMO_LAYERS", "DEMO_EDIT", "demo_training", "demo_pair"]

log = logging.getLogger(__name__)

#: The SimpleCNN layers the demo records (every layer with parameters).
DEMO_LAYERS = ["conv1", "conv2", "conv3", "fc1", "fc2"]
#: The B arm of :func:`demo_pair`: the seed's halving of conv2's output gradient.
DEMO_EDIT = "conv2=scale(0.5)"

#: ``progress(done_steps, total_steps, text)``.
Progress = Callable[[int, int, str], Any]


def demo_training(store: TraceStore, *, steps: int = 60, edits: EditsArg = None, seed: int = 0,
                  every: int = 1, batch_size: int = 32, n_train: int = 1024,
                  author: str | None = None, tags: Sequence[str] = ("demo",),
                  progress: Progress | None = None, done: int = 0, total: int | None = None,
                  by: Identity | None = None) -> str:
    """Train the SimpleCNN on the shapes set for ``steps`` steps under ``edits``, recorded with
    :func:`hooklab.watch` into ``store`` (streamed: visible, live, while it trains).

    Args:
        store: where the run goes.
        steps: optimiser steps (batches of ``batch_size`` from ``n_train`` shapes images).
        edits: gradient edits applied on every step (``"conv2=scale(0.5)"``...), as in
            :func:`hooklab.record`.
        seed: model initialisation and batch order (the same seed gives the same step 0).
        every: record every ``every``-th step.
        author, tags: stored with the run.
        by: the signed-in member who owns the run (its author is then ``by.label``).
        progress: called after each step as ``progress(done + step + 1, total, text)``.
        done, total: offsets for ``progress`` when several trainings share one bar.

    Returns:
        The run id.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    cfg = TrainConfig(steps=steps, batch_size=batch_size, n_train=n_train, seed=seed,
                      act_penalty=0.0)
    if cfg.batch_size > cfg.n_train:
        raise ValueError(f"batch_size {batch_size} exceeds n_train {n_train}")
    data = data_mod.make_shapes(cfg.n_train, cfg.data_seed, "train")
    model = get_model("simple_cnn", seed=seed, num_classes=len(data_mod.SHAPE_CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    per_epoch = cfg.n_train // cfg.batch_size
    edit_text = describe(edits)
    label = edit_text or "no edit"
    total = steps if total is None else total
    meta = {"model": "simple_cnn", "data": "shapes", "demo": True,
            "train": {"steps": steps, "batch_size": cfg.batch_size, "n_train": cfg.n_train,
                      "lr": cfg.lr, "seed": seed, "optimizer": "Adam"}}
    order = torch.empty(0, dtype=torch.long)
    model.train()
    with watch(model, store, every=every, layers=DEMO_LAYERS, edits=edits, author=author, by=by,
               tags=list(tags), notes=f"demo training: SimpleCNN on shapes, {label}",
               meta=meta, segment_seconds=2.0) as w:
        for step in range(steps):
            pos = step % per_epoch
            if pos == 0:
                order = torch.randperm(cfg.n_train, generator=gen)
            idx = order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
            x, y = data.images[idx], data.labels[idx]
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            acc = float((out.detach().argmax(1) == y).float().mean())
            w.step(loss=float(loss.detach()), acc=acc)
            if progress is not None:
                progress(done + step + 1, total, f"{label}: step {step + 1}/{steps}")
    model.eval()
    log.info("demo training %s (%s): %d steps", w.run_id, label, steps)
    return str(w.run_id)


def demo_pair(store: TraceStore, *, steps: int = 60, seed: int = 0, every: int = 1,
              author: str | None = None, progress: Progress | None = None,
              by: Identity | None = None) -> tuple[str, str]:
    """The demo twice from the same seed: A without an edit, B under ``conv2=scale(0.5)``.

    Returns:
        ``(run_a, run_b)``.
    """
    kw: dict[str, Any] = {"steps": steps, "seed": seed, "every": every, "author": author,
                          "by": by, "progress": progress, "total": 2 * steps}
    a = demo_training(store, edits=None, done=0, tags=("demo", "no edit"), **kw)
    b = demo_training(store, edits=DEMO_EDIT, done=steps, tags=("demo", DEMO_EDIT), **kw)
    return a, b
