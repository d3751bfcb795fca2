"""``Watcher``: record a user's own training loop, one step at a time, into streamed segments.

Use through :func:`hooklab.watch` (``hooklab.store.watch.watch``), which connects a watcher to a
:class:`~hooklab.store.runs.TraceStore`::

    with hooklab.watch(model, every=10, layers="Conv2d") as w:
        for x, y in loader:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
            w.step(loss=...)                     # ends the step; scalars are optional

What a watcher does per training step ``k`` (0-based, counted by :meth:`Watcher.step`):

- steps ``0, every, 2*every, ...`` are *recorded*: a :class:`~hooklab.recording.recorder.Recorder`
  (statistics only, ``inputs=False``, ``param_grads`` as asked) is attached for that step, and
  besides its events (outputs, output gradients, parameter gradients) the watcher adds the
  scalars ``update_ratio/<param>`` = ||w_after - w_before|| / ||w_before|| of the optimizer step
  and ``dead_frac/<layer>`` = the fraction of units (dim 1 of an ``(N, C, ...)`` output) that
  are exactly zero for every sample of the step's batches. Steps in ``tensors_at`` keep tensors.
- on the other steps no hooklab hook is on the model, except, when ``edits`` are given, a
  recorder that applies the edits exactly as :func:`~hooklab.recording.recorder.record` does
  (its events are dropped): edits act on *every* step.
- ``w.step(**scalars)`` values (loss, accuracy...) are kept for every step.
- forward passes run under ``torch.no_grad()`` / ``torch.inference_mode()`` (evaluation) add no
  events: they are dropped. (They still count in the ``call`` index when they happen in the
  middle of a step, after its first training forward.)
- gradient accumulation (several forward/backward passes before one ``w.step()``) gives one
  event per pass (``call`` 0, 1, ...; parameter gradients as accumulated after each pass,
  summarised together at the end of the pass: one kernel call, not one per parameter).

Finished steps are handed to a *sink* (:class:`SegmentSink`) in segments of ``segment_steps``
recorded steps, or sooner when ``segment_seconds`` have passed, so a reader sees the run grow.
By default (``segment_steps=None``) segments are cut by time only (at most
:data:`AUTO_SEGMENT_STEPS` recorded steps each), and the interval grows with the run's age
(``max(segment_seconds, age / AGE_DIVISOR)``): a fresh run shows new steps every few seconds,
and a run of many hours still has only some hundreds of segments to read.
A sink that fails to write (disk full) does not stop the training: the watcher logs an error,
keeps the unwritten segments (at most :data:`MAX_PENDING` of them; older ones are then
dropped and counted in :attr:`Watcher.lost_steps`), retries at the next commit and at exit, and
logs a summary at exit (:attr:`Watcher.write_errors`). Every hook is removed on exit, also when
the body raises; the events of a step that was begun but never ended are dropped.

Several models: one watcher per model (they may be open at the same time).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from hooklab.core.edits import EditsArg, normalise_edits
from hooklab.core.layers import LayerSpec
from hooklab.core.native import Kernels, accepts, kernels
from hooklab.core.trace import Trace
from hooklab.recording.recorder import DEFAULT_MAX_BYTES, Recorder

log = logging.getLogger(__name__)

__all__ = ["AGE_DIVISOR", "AUTO_SEGMENT_STEPS", "MAX_PENDING", "SCALAR_COLUMNS", "Segment", "SegmentSink",
           "Watcher"]

#: Most recorded steps in one segment when ``segment_steps`` is not given (a memory bound).
AUTO_SEGMENT_STEPS = 500
#: Time-cut segments: the interval is ``max(segment_seconds, age / AGE_DIVISOR)``, about
#: 460 segments per tenfold of run time once the age term dominates.
AGE_DIVISOR = 200.0
#: Unwritten segments kept in memory while the sink fails; beyond, the oldest are dropped.
MAX_PENDING = 20
#: Columns of a segment's (and a watch run's) scalars table.
SCALAR_COLUMNS = ("step", "name", "value")
#: Seconds between heartbeats when no segment is due (a reader on another machine tells a
#: live run from one whose writer died by the heartbeat's age).
HEARTBEAT_SECONDS = 30.0


@dataclass
class Segment:
    """Finished steps handed to a sink in one piece."""

    steps: list[int]  # recorded steps in this segment, ascending
    events: pd.DataFrame  # their events (hooklab.core.trace.EVENT_COLUMNS), seq run-wide
    scalars: pd.DataFrame  # columns SCALAR_COLUMNS: every step's scalars (recorded or not)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # by the events' key
    steps_done: int = 0  # steps ended when the segment was cut


class SegmentSink(Protocol):
    """Where a watcher's segments go (the store's stream writer is one)."""

    def open(self, meta: dict[str, Any]) -> None:
        """Called on entering the watcher, before the first step."""

    def write_segment(self, segment: Segment) -> None:
        """Commit ``segment`` durably, or raise (the watcher keeps it and retries)."""

    def heartbeat(self, steps_done: int) -> None:
        """The writer is alive; ``steps_done`` steps have ended."""

    def close(self, status: str, error: str, steps_done: int) -> None:
        """The watcher exited: ``status`` is ``"finished"`` or ``"failed"`` (``error`` says why)."""


def _scalar_value(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"w.step({name}=...) needs one number, got a tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)  # numpy scalars
        except (TypeError, ValueError):
            raise TypeError(f"w.step({name}=...) needs a number, got "
                            f"{type(value).__name__}") from None
    return float(value)


class Watcher:
    """Records a training loop step by step; see the module docstring and :func:`hooklab.watch`.

    Args:
        model: the ``nn.Module`` being trained.
        sink: where segments go (``None``: kept in :attr:`segments`, for tests and notebooks).
        every: record steps ``0, every, 2*every, ...`` (>= 1).
        layers: as in :func:`hooklab.record` (``None``: every leaf module).
        param_grads: record parameter gradients.
        tensors_at: steps whose tensors are kept (statistics only on the others).
        edits: as in :func:`hooklab.record`; applied on every step.
        meta: extra metadata for the run (model name, data, ...).
        segment_steps: recorded steps per segment (default ``None``: by time, at most
            :data:`AUTO_SEGMENT_STEPS`).
        segment_seconds: commit a segment at the first step end this long after the last commit
            (``None``: only by steps); with ``segment_steps=None`` the interval grows with the
            run's age (``age / AGE_DIVISOR``).
        update_ratios: compute ``update_ratio/<param>`` (keeps one copy of the parameters).
        max_bytes: tensor byte budget per segment (steps in ``tensors_at``).
    """

    def __init__(self, model: nn.Module, sink: SegmentSink | None = None, *, every: int = 10,
                 layers: LayerSpec = None, param_grads: bool = True,
                 tensors_at: Iterable[int] = (), edits: EditsArg = None,
                 meta: Mapping[str, Any] | None = None, segment_steps: int | None = None,
                 segment_seconds: float | None = 5.0, update_ratios: bool = True,
                 max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"watch() needs an nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (record every Nth step), got "
                             f"{every!r}")
        if segment_steps is not None and (isinstance(segment_steps, bool)
                                          or not isinstance(segment_steps, int)
                                          or segment_steps < 1):
            raise ValueError(f"segment_steps must be an integer >= 1, got {segment_steps!r}")
        if segment_seconds is not None and not (float(segment_seconds) > 0):
            raise ValueError(f"segment_seconds must be > 0 or None, got {segment_seconds!r}")
        try:
            self.tensors_at = frozenset(int(s) for s in tensors_at)
        except (TypeError, ValueError) as exc:
            raise ValueError("tensors_at must be step numbers (ints)") from exc
        self.model = model
        self.sink = sink
        self.every = every
        self.param_grads = bool(param_grads)
        self.segment_steps = segment_steps
        self._auto = segment_steps is None
        self._max_steps = AUTO_SEGMENT_STEPS if segment_steps is None else segment_steps
        self.segment_seconds = None if segment_seconds is None else float(segment_seconds)
        self.update_ratios = bool(update_ratios)
        self.max_bytes = max_bytes
        self._layer_spec = layers
        self._edits = edits
        # Building a recorder (no hook yet) resolves the layers and the edits: an unknown layer
        # is the recorder's error, raised here, before anything is written.
        probe = Recorder(model, layers, edits=edits, param_grads=param_grads, inputs=False,
                         keep_tensors=False)
        self.layers: list[str] = list(probe.layers)
        self._has_edits = bool(normalise_edits(edits))
        user_meta = dict(meta or {})
        self.meta: dict[str, Any] = {
            **probe.trace.meta, **user_meta,
            "model": user_meta.get("model", type(model).__name__),
            "kind": "watch", "page": user_meta.get("page", "training"),
            "every": every, "tensors_at": sorted(self.tensors_at),
            "segment_steps": segment_steps, "segment_seconds": self.segment_seconds,
            "scalars": list(SCALAR_COLUMNS), "update_ratios": self.update_ratios,
        }
        for k in ("truncated", "stored_bytes", "keep_tensors"):
            self.meta.pop(k, None)
        self.run_id: str | None = None  # set by hooklab.watch
        self.steps_done = 0
        self.segments: list[Segment] = []  # segments written when there is no sink
        self.write_errors: list[str] = []
        self.lost_steps: list[int] = []
        self._state = "new"
        self._thread: int | None = None
        self._rec: Recorder | None = None  # the recording recorder, while attached
        self._edit_rec: Recorder | None = None  # edits only, on unrecorded steps
        self._handles: list[Any] = []  # the watcher's own hooks (root, dead units)
        self._traces: list[Trace] = []  # traces of the segment being filled
        self._seg_steps: list[int] = []
        self._scalar_rows: list[tuple[int, str, float]] = []
        self._pending: list[Segment] = []  # committed, not yet written (in order)
        self._writer: _BackgroundWriter | None = None
        self._seq = 0
        self._last_commit = self._started = time.monotonic()
        self._last_beat = self._last_commit
        self._recording = False
        self._grad_forward = False
        self._swapped: Trace | None = None
        self._alive: dict[str, torch.Tensor] = {}  # layer -> uint8 "unit alive" buffer
        self._alive_seen: dict[str, None] = {}  # layers whose buffers this step has written
        self._params = [(n, p) for n, p in model.named_parameters()
                        if p.requires_grad and p.is_floating_point()]
        self._before: list[torch.Tensor] = []
        self._before_norms: list[torch.Tensor] = []
        self._native_norms: list[float] | None = None  # the weights' norms, native snapshot
        self._native: Kernels | None = None  # the kernels that took it
        # after step k's native ratio pass the buffers hold the weights as they were then: the
        # snapshot of step k + 1 (taken in the same w.step call) when their keys (identity,
        # storage, version counter, shape) are unchanged; (k + 1, keys, norms). Only for the very next
        # step: `p.data` updates bump no version counter, so a later step always copies.
        self._carried: tuple[int, list[tuple[int, int, int, torch.Size]], list[float]] | None \
            = None

    def __repr__(self) -> str:
        return (f"Watcher({type(self.model).__name__}, every={self.every}, "
                f"{len(self.layers)} layers, {self.steps_done} steps, run {self.run_id})")

    # -- the with block ---------------------------------------------------------------------
    def __enter__(self) -> Watcher:
        if self._state != "new":
            raise RuntimeError("a watcher can be entered once; call hooklab.watch() again")
        self._thread = threading.get_ident()
        if self.sink is not None:
            self.sink.open(self.meta)
            self._writer = _BackgroundWriter(self)
        self._state = "active"
        self._last_commit = self._last_beat = self._started = time.monotonic()
        try:
            self._begin_step(0)
        except BaseException as exc:
            self._detach_all()
            self._state = "closed"
            self._finish(exc)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._state = "closed"
        try:
            self._detach_all()
        finally:
            self._finish(exc)

    def step(self, **scalars: Any) -> int:
        """End the current training step (call it after ``optimizer.step()``).

        Keyword arguments are scalars stored for this step under their names
        (``loss=loss.item()``); numbers or one-element tensors. Returns the step just ended.
        """
        if self._state != "active":
            where = "before entering" if self._state == "new" else "after leaving"
            raise RuntimeError(f"w.step() was called {where} the watcher; call it inside "
                               "`with hooklab.watch(model, ...) as w:`")
        values = [(name, _scalar_value(name, v)) for name, v in scalars.items()]
        k = self.steps_done
        self._end_step(k, values)
        self.steps_done = k + 1
        self._maybe_commit(force=self._recording and k in self.tensors_at)
        self._begin_step(k + 1)
        return k

    # -- one step -----------------------------------------------------------------------------
    def is_recorded(self, step: int) -> bool:
        """Whether step ``step`` is recorded (``step % every == 0``)."""
        return step % self.every == 0

    def _begin_step(self, k: int) -> None:
        self._restore_swap()
        self._grad_forward = False
        if not self.is_recorded(k):
            self._recording = False
            self._detach_recorder()
            if self._has_edits:
                if self._edit_rec is None:
                    self._edit_rec = Recorder(self.model, [], edits=self._edits, inputs=False,
                                              keep_tensors=False, step=k)
                    self._edit_rec.__enter__()
                else:
                    self._edit_rec.next_step()
                self._edit_rec.trace = Trace()  # its events are not kept
            return
        self._detach_edit_recorder()
        keep = k in self.tensors_at
        if self._rec is None:
            rec = Recorder(self.model, self._layer_spec, edits=self._edits,
                           param_grads=self.param_grads, inputs=False, keep_tensors=keep,
                           max_bytes=self.max_bytes, step=k, batch_param_stats=True,
                           defer_rows=True, on_output=self._dead_output)
            rec.__enter__()
            self._rec = rec
            self._traces.append(rec.trace)
            try:
                self._attach_own_hooks()
            except BaseException:
                self._detach_recorder()
                raise
        else:
            self._rec.next_step()
            self._rec.step = k
            self._rec.keep_tensors = keep
            if self._rec.trace not in self._traces:
                self._rec.trace = Trace()
                self._traces.append(self._rec.trace)
        self._recording = True
        self._reset_alive()
        if self.update_ratios:
            self._snapshot(k)

    def _end_step(self, k: int, values: list[tuple[str, float]]) -> None:
        self._restore_swap()
        if self._rec is not None:
            self._rec.flush_rows()
        rows = [(k, name, v) for name, v in values]
        if self._recording:
            rows += self._update_ratio_rows(k) + self._dead_rows(k)
            self._seg_steps.append(k)
        self._scalar_rows += rows

    # -- the watcher's own hooks ----------------------------------------------------------
    def _attach_own_hooks(self) -> None:
        """Root hooks that drop no-grad forwards. (The dead-unit reductions run in the
        recorder's own forward hooks, :meth:`_dead_output`, after any activation edit.)"""
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre, prepend=True))
        self._handles.append(self.model.register_forward_hook(self._root_post))

    def _root_pre(self, module: nn.Module, args: Any) -> None:
        if threading.get_ident() != self._thread or self._rec is None:
            return
        if torch.is_grad_enabled():
            self._grad_forward = True
        elif self._swapped is None:
            self._swapped = self._rec.trace
            self._rec.trace = Trace()  # an evaluation forward: its events are dropped

    def _root_post(self, module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() == self._thread and not torch.is_grad_enabled():
            self._restore_swap()

    def _restore_swap(self) -> None:
        if self._swapped is not None and self._rec is not None:
            self._rec.trace = self._swapped
            if not self._grad_forward:  # evaluation before the step's training forward:
                step = self._rec.step      # its module calls do not count
                self._rec.next_step()
                self._rec.step = step
        self._swapped = None

    def _dead_output(self, name: str, out: Any) -> None:
        """A recorded layer's output in a training forward: OR its units' liveness into the
        layer's buffer (kept from step to step, zeroed once read)."""
        if (not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point()
                or not torch.is_grad_enabled()):
            return
        buf = self._alive.get(name)
        if buf is None or buf.numel() != out.shape[1] or buf.device != out.device:
            buf = self._alive[name] = torch.zeros(out.shape[1], dtype=torch.uint8,
                                                  device=out.device)
        self._alive_seen[name] = None
        _alive_units(out, buf)

    def _reset_alive(self) -> None:
        if self._alive_seen:
            torch._foreach_zero_([self._alive[n] for n in self._alive_seen])
            self._alive_seen.clear()

    def _dead_rows(self, k: int) -> list[tuple[int, str, float]]:
        if not self._alive_seen:
            return []
        names = list(self._alive_seen)
        bufs = [self._alive[n] for n in names]
        alive = torch.cat(bufs).cpu().numpy()  # one copy off the device, if any
        rows, start = [], 0
        for n, b in zip(names, bufs, strict=True):
            units = b.numel()
            live = int(np.count_nonzero(alive[start:start + units]))
            start += units
            rows.append((k, f"dead_frac/{n}", (units - live) / units if units else math.nan))
        self._reset_alive()
        return rows

    # -- update ratio ---------------------------------------------------------------------------
    def _snapshot(self, step: int) -> None:
        """Copy the weights before this step's optimizer step, into buffers reused every step
        (the trainable parameters of this step: unfreezing a layer later is followed)."""
        self._params = [(n, p) for n, p in self.model.named_parameters()
                        if p.requires_grad and p.is_floating_point()]
        self._before_norms = []
        self._native_norms = None
        if not self._params:
            return
        carried, self._carried = self._carried, None
        if carried is not None and carried[0] == step \
                and carried[1] == _weight_keys(self._params):
            # the last recorded step's (native) ratio pass left these very weights in the
            # buffers: same parameters, storages, shapes and version counters
            self._native_norms = carried[2]
            return
        params = [p.detach() for _, p in self._params]
        with torch.no_grad():
            if len(self._before) != len(params) or any(
                    b.shape != p.shape or b.device != p.device or b.dtype != p.dtype
                    for b, p in zip(self._before, params, strict=True)):
                self._before = [torch.empty_like(p) for p in params]
            k = kernels() if all(accepts(p) for p in params) else None
            if k is not None:
                self._native = k
                # one read of each weight gives both the copy and its norm
                self._native_norms = [math.sqrt(k.copy_sumsq(p, b))
                                      for p, b in zip(params, self._before, strict=True)]
                return
            torch._foreach_copy_(self._before, params)
            self._before_norms = list(torch._foreach_norm(self._before))

    def _update_ratio_rows(self, k: int) -> list[tuple[int, str, float]]:
        if not self.update_ratios or not self._params:
            return []
        if self._native_norms is not None:
            assert self._native is not None  # the kernels read the parameters' memory
            ratios, norms = _native_ratios(self._native, [p for _, p in self._params],
                                           self._before, self._native_norms)
            self._carried = (k + 1, _weight_keys(self._params), norms)
        elif self._before_norms:
            ratios = self._foreach_ratios([p.detach() for _, p in self._params])
        else:
            return []
        self._before_norms = []
        self._native_norms = None
        return [(k, f"update_ratio/{n}", r)
                for (n, _), r in zip(self._params, ratios, strict=True)]

    def _foreach_ratios(self, params: list[torch.Tensor]) -> list[float]:
        with torch.no_grad():
            torch._foreach_sub_(self._before, params)  # buffers now hold w_before - w_after
            delta = torch._foreach_norm(self._before)
            by_device: dict[torch.device, list[int]] = {}
            for i, d in enumerate(delta):
                by_device.setdefault(d.device, []).append(i)
            ratios: list[float] = [0.0] * len(delta)
            for idx in by_device.values():
                num = torch.stack([delta[i] for i in idx]).double()
                den = torch.stack([self._before_norms[i] for i in idx]).double()
                for i, r in zip(idx, (num / den).tolist(), strict=True):
                    ratios[i] = r
        return ratios

    # -- segments -------------------------------------------------------------------------------
    def _maybe_commit(self, force: bool = False) -> None:
        now = time.monotonic()
        interval = self.segment_seconds
        if interval is not None and self._auto:
            interval = max(interval, (now - self._started) / AGE_DIVISOR)
        due = force or len(self._seg_steps) >= self._max_steps or (
            interval is not None and now - self._last_commit >= interval
            and bool(self._seg_steps or self._scalar_rows))
        if due:
            self._commit()
        elif self._writer is not None and now - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = now
            self._writer.beat(self.steps_done)

    def _cut(self, upto: int) -> Segment | None:
        """The segment of the finished steps (< ``upto``); resets the buffers."""
        # A recorder lives for one segment at most: its tensor-hook handles (one per output
        # per forward) are released with it, so a long run does not accumulate them. The
        # next recorded step attaches a fresh one (between steps: nothing is in flight).
        self._detach_recorder()
        traces, self._traces = self._traces, []
        frames = [t.events for t in traces if len(t)]
        tensors: dict[str, torch.Tensor] = {}
        if frames:
            events = pd.concat(frames, ignore_index=True)
            old_keys = events["key"].tolist()
            for t in traces:
                tensors.update(t.tensors())
            keep = events["step"] < upto
            events = events[keep].reset_index(drop=True)
            old_keys = list(itertools.compress(old_keys, keep.tolist()))
        else:
            events = Trace().events
            old_keys = []
        n = len(events)
        events["seq"] = range(self._seq, self._seq + n)
        self._seq += n
        new_keys = [f"t{s:09d}" if k else "" for s, k in zip(events["seq"], old_keys,
                                                              strict=True)]
        events["key"] = new_keys
        stored = {nk: tensors[ok] for ok, nk in zip(old_keys, new_keys, strict=True) if ok}
        scalars = pd.DataFrame(self._scalar_rows, columns=list(SCALAR_COLUMNS))
        scalars = scalars.astype({"step": "int64", "name": str, "value": "float64"})
        steps = [s for s in self._seg_steps if s < upto]
        self._seg_steps = []
        self._scalar_rows = []
        if not steps and scalars.empty and n == 0:
            return None
        return Segment(steps=steps, events=events, scalars=scalars, tensors=stored,
                       steps_done=self.steps_done)

    def _commit(self, upto: int | None = None) -> None:
        seg = self._cut(self.steps_done if upto is None else upto)
        self._last_commit = self._last_beat = time.monotonic()
        if seg is None:
            return
        if self.sink is None:
            self.segments.append(seg)
            return
        if self._writer is not None:
            self._writer.submit(seg)

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until the segments committed so far are written (segments are written by a
        background thread, so the training never waits for the disk). Returns whether
        nothing is left unwritten; a failed write is retried once by this call."""
        if self._writer is None:
            return True
        return self._writer.flush(timeout)

    def _flush(self) -> None:
        """Write pending segments in order; stop at the first failure (retried later)."""
        assert self.sink is not None
        while self._pending:
            seg = self._pending[0]
            try:
                self.sink.write_segment(seg)
            except Exception as exc:  # noqa: BLE001 - a full disk must not stop the training
                msg = f"{type(exc).__name__}: {exc}"
                self.write_errors.append(msg)
                log.error("watch: could not write the segment of steps %s (kept in memory, "
                          "retried at the next commit): %s", _span(seg.steps), msg)
                while len(self._pending) > MAX_PENDING:
                    lost = self._pending.pop(0)
                    self.lost_steps += lost.steps
                    log.error("watch: dropped the unwritten steps %s (more than %d segments "
                              "could not be written)", _span(lost.steps), MAX_PENDING)
                return
            self._pending.pop(0)

    # -- exit -----------------------------------------------------------------------------------
    def _detach_recorder(self) -> None:
        for h in self._handles:
            try:
                h.remove()
            except Exception:  # noqa: BLE001 - removal goes on for every handle
                log.exception("could not remove a watch hook")
        self._handles.clear()
        self._restore_swap()
        rec, self._rec = self._rec, None
        if rec is not None:
            rec.__exit__(None, None, None)

    def _detach_edit_recorder(self) -> None:
        rec, self._edit_rec = self._edit_rec, None
        if rec is not None:
            rec.__exit__(None, None, None)

    def _detach_all(self) -> None:
        try:
            self._detach_recorder()
        finally:
            self._detach_edit_recorder()

    def _finish(self, exc: BaseException | None) -> None:
        """Commit the last partial segment and close the sink (never masks ``exc``)."""
        try:
            self._commit()
        except Exception:  # noqa: BLE001 - closing goes on
            log.exception("watch: could not cut the last segment")
        if self.sink is None:
            return
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        if self._pending:  # the last retry
            self._flush()
        if self._pending:
            self.lost_steps += [s for seg in self._pending for s in seg.steps]
            self._pending.clear()
        status = "failed" if exc is not None else "finished"
        error = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        if self.lost_steps:
            log.error("watch run %s: %d recorded steps could not be written (%s); the steps "
                      "committed before are intact. Errors: %s", self.run_id,
                      len(self.lost_steps), _span(self.lost_steps), "; ".join(
                          dict.fromkeys(self.write_errors)))
        elif self.write_errors:
            log.warning("watch run %s: %d segment writes failed and were retried successfully",
                        self.run_id, len(self.write_errors))
        try:
            self.sink.close(status, error, self.steps_done)
        except Exception as close_exc:  # noqa: BLE001 - never mask the body's exception
            log.error("watch run %s: could not mark the run %s: %s", self.run_id, status,
                      close_exc)
            self.write_errors.append(f"{type(close_exc).__name__}: {close_exc}")


class _BackgroundWriter:
    """The one thread that hands a watcher's committed segments to its sink, in order.

    A segment whose write fails stays first in line and is retried at the next submission
    (or :meth:`flush`); the watcher's ``_flush`` does the writing and the bookkeeping.
    """

    def __init__(self, watcher: Watcher) -> None:
        self._w = watcher
        self._cv = threading.Condition()
        self._io = threading.Lock()  # held while the sink is in use
        self._requested = 0
        self._attempted = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hooklab-watch-writer",
                                        daemon=True)
        self._thread.start()

    def submit(self, seg: Segment) -> None:
        with self._cv:
            self._w._pending.append(seg)
            self._requested += 1
            self._cv.notify_all()

    def flush(self, timeout: float | None) -> bool:
        with self._cv:
            self._requested += 1
            want = self._requested
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._attempted >= want or not self._thread.is_alive(),
                              timeout)
            return not self._w._pending

    def beat(self, steps_done: int) -> None:
        """A heartbeat, unless a segment is being written (that refreshes it anyway)."""
        if not self._io.acquire(blocking=False):
            return
        try:
            assert self._w.sink is not None
            self._w.sink.heartbeat(steps_done)
        except Exception as exc:  # noqa: BLE001 - a heartbeat never stops the training
            log.warning("watch heartbeat failed: %s", exc)
        finally:
            self._io.release()

    def stop(self) -> None:
        """Write what was submitted (one attempt), then end the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stopping or self._requested > self._attempted)
                if self._requested <= self._attempted:
                    return  # stopping, nothing new
                want = self._requested
            try:
                with self._io:
                    self._w._flush()
            finally:
                with self._cv:
                    self._attempted = want
                    self._cv.notify_all()


def _weight_keys(params: list[tuple[str, nn.Parameter]]
                 ) -> list[tuple[int, int, int, torch.Size]]:
    """What identifies a weight's values without reading them: the parameter, its storage,
    its version counter (bumped by every in-place change: an optimizer step, ``copy_``, ...)
    and its shape."""
    return [(id(p), p.data_ptr(), p._version, p.shape) for _, p in params]


def _native_ratios(k: Kernels, params: list[torch.Tensor], before: list[torch.Tensor],
                   norms: list[float]) -> tuple[list[float], list[float]]:
    """‖w_before - w_after‖ / ‖w_before‖ per parameter by the C kernel (x / 0 is inf and
    0 / 0 NaN, as in the torch path), and ‖w_after‖: the same pass copies w_after into the
    buffers, the snapshot of the next step when nothing changes the weights in between."""
    ratios, after = [], []
    for (d2, w2), w in zip(k.diff_copy_many(before, params), norms, strict=True):
        d = math.sqrt(d2)
        ratios.append(d / w if w else (math.nan if d == 0 else math.inf))
        after.append(math.sqrt(w2))
    return ratios, after


def _alive_units(out: torch.Tensor, alive: torch.Tensor) -> None:
    """``alive[c] |= some sample has a non-zero value in unit c`` (dim 1 of ``out``), in place
    on the uint8 ``alive``. NaN counts as non-zero.

    A contiguous float32 CPU tensor goes to the C kernel of :mod:`hooklab.core.native`, which
    skips units already alive and stops a unit's scan at its first non-zero value (a few reads
    per unit of a ReLU layer). Otherwise one ``amax`` over the other dims (about a third of the
    cost of an inf-norm over them); the ``amin`` pass is needed only when some unit's maximum
    is exactly zero (on CPU; on other devices both run, to avoid a sync).
    """
    k = kernels() if accepts(out) else None
    if k is not None:
        k.alive_units(out, alive)
        return
    out = out.detach()
    dims = [0, *range(2, out.dim())]
    hit = out.amax(dim=dims) != 0
    if out.device.type != "cpu" or not bool(hit.all()):
        hit |= out.amin(dim=dims) != 0
    alive |= hit.to(torch.uint8)


def _span(steps: list[int]) -> str:
    if not steps:
        return "(none)"
    return f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
