"""``hooklab.watch``: record your own training loop into the store, streamed.

Example:
    >>> with hooklab.watch(model, "runs", every=10, layers="Conv2d", tags=["baseline"]) as w:
    ...     for x, y in loader:
    ...         opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    ...         w.step(loss=...)
    >>> run = hooklab.TraceStore("runs").watch_run(w.run_id)   # also while it is still live
    >>> run.scalar("loss"), run.events.groupby(["step", "layer"])["norm"].first()
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from hooklab.core.edits import EditsArg
from hooklab.core.errors import StoreError
from hooklab.core.layers import LayerSpec
from hooklab.recording.recorder import DEFAULT_MAX_BYTES
from hooklab.recording.watch import Watcher
from hooklab.store import format as fmt
from hooklab.store.access import Identity
from hooklab.store.listing import normalise_tags
from hooklab.store.runs import TraceStore, _versions
from hooklab.store.stream import StreamWriter

__all__ = ["watch"]


def watch(model: nn.Module, store: TraceStore | str | os.PathLike[str] | None = None, *,
          every: int = 10, layers: LayerSpec = None, param_grads: bool = True,
          tensors_at: Iterable[int] = (), author: str | None = None,
          tags: str | Iterable[str] | None = (), notes: str = "", edits: EditsArg = None,
          meta: Mapping[str, Any] | None = None, segment_steps: int | None = None,
          segment_seconds: float | None = 5.0, update_ratios: bool = True,
          max_bytes: int | None = DEFAULT_MAX_BYTES, run_id: str | None = None,
          by: Identity | None = None) -> Watcher:
    """Watch a training loop of ``model``; use as ``with hooklab.watch(model) as w:``.

    Call ``w.step(loss=..., ...)`` once per training step, after ``optimizer.step()``. The run
    is created in the store when the ``with`` is entered (marked live), grows by segments while
    the loop runs and is marked finished (or failed, with the error) when the ``with`` exits.
    ``w.run_id`` names it from the start.

    Args:
        model: the ``nn.Module`` being trained (one watch per model; several may be open).
        store: a :class:`TraceStore`, a store folder, or ``None`` (``$HOOKLAB_STORE`` or
            ``./hooklab-runs``).
        every: record steps ``0, every, 2*every, ...``; no hooklab hook is on the model on the
            other steps (except the edits').
        layers: as in :func:`hooklab.record` (``None``: every leaf module).
        param_grads: record parameter gradients.
        tensors_at: steps whose tensors are kept (statistics only otherwise).
        author, tags, notes, by: as in :meth:`TraceStore.save` (``by``: the signed-in member,
            who then owns the run).
        edits: as in :func:`hooklab.record`; applied on every step.
        meta: extra metadata (``model``, data set, ...); ``meta["page"]`` is ``"training"``.
        segment_steps: recorded steps per segment (default ``None``: cut by time, at most 500
            recorded steps per segment).
        segment_seconds: commit at the first step end this long after the last commit, so a
            live run shows new steps every few seconds (``None``: by ``segment_steps`` only).
            With ``segment_steps=None`` the interval grows with the run's age (age / 200), so
            a run of many hours has some hundreds of segments, not thousands.
        update_ratios: store ``update_ratio/<param>`` per recorded step.
        max_bytes: tensor byte budget per segment.
        run_id: an explicit run id (default a new sortable one).

    Raises:
        LayerNotFoundError: ``layers`` (or an edit) names no layer of the model.
        ValueError: ``every < 1`` and other bad settings.
        StoreError: the store cannot be written (raised when the ``with`` is entered).
    """
    watcher = Watcher(model, every=every, layers=layers, param_grads=param_grads,
                      tensors_at=tensors_at, edits=edits, meta=meta,
                      segment_steps=segment_steps, segment_seconds=segment_seconds,
                      update_ratios=update_ratios, max_bytes=max_bytes)
    target = store if isinstance(store, TraceStore) else TraceStore(store)
    if run_id is None:
        run_id = fmt.new_run_id()
    elif target.is_taken(fmt.check_run_id(run_id)):
        raise StoreError(f"run id {run_id!r} is already used in {target.root}")
    writer = StreamWriter(target, run_id, author=author, notes=notes,
                          tags=normalise_tags(tags), versions=_versions(), by=by)
    watcher.sink = writer
    watcher.run_id = run_id
    return watcher
