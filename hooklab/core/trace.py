"""The trace data model: one event per hook firing, tensor statistics, stored payloads.

A :class:`Trace` is what a recording produced. ``trace.events`` is a pandas DataFrame with one
row per hook firing, in firing order (columns: :data:`EVENT_COLUMNS`); ``trace.tensor(key)``
returns a stored payload (detached, CPU, float32). A trace built by the store reads its tensors
lazily from disk.

Example:
    >>> with hooklab.record(model, layers="conv1") as rec:
    ...     model(x).sum().backward()
    >>> rec.trace.events[["seq", "phase", "layer", "role", "norm"]]
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from hooklab.core.display import DisplayMixin
from hooklab.core.stats import STATS_CHUNK, tensor_stats  # noqa: F401  (re-exported)

#: Columns of ``Trace.events``, in order. Statistics are float64; counts are int64.
EVENT_COLUMNS: tuple[str, ...] = (
    "seq",  # global firing order, 0-based
    "step",  # training step (0 for a single forward+backward)
    "phase",  # "forward" or "backward"
    "kind",  # hook kind: forward_pre, forward, full_backward_pre, full_backward, backward, tensor,
    # post_accumulate_grad
    "layer",  # qualified module name ("" for the root module or a free tensor)
    "call",  # index of the module call in this step (a module called twice gives 0 and 1)
    "role",  # input, output, grad_output, grad_input, param_grad, edited
    "index",  # position in the hook's tuple ("0", "1", ...) or parameter name ("weight")
    "edit",  # for an edit's before/after pair: the edit's JSON spec; else ""
    "shape",  # "1x2x4x4" ("" for a scalar)
    "dtype",  # original dtype, e.g. "torch.float32"
    "device",  # original device, e.g. "cpu" or "cuda:0"
    "numel",
    "mean",
    "std",
    "min",
    "max",
    "norm",  # L2 norm
    "zero_frac",  # fraction of exact zeros
    "nan_count",
    "inf_count",
    "key",  # key of the stored tensor, "" when only statistics were kept
)

STAT_COLUMNS: tuple[str, ...] = (
    "mean", "std", "min", "max", "norm", "zero_frac", "nan_count", "inf_count",
)

#: Values of the ``role`` column.
ROLES = ("input", "output", "grad_output", "grad_input", "param_grad", "edited")
#: Values of the ``phase`` column.
PHASES = ("forward", "backward")
#: Layer name of events about the model as a whole: its input (role ``input``, stored under
#: :data:`INPUT_KEY` by CAM runs) and the input gradient (role ``grad_input``).
INPUT_LAYER = ""
#: Key of the stored model input of a CAM run.
INPUT_KEY = "model_input"


def shape_str(shape: torch.Size | tuple[int, ...]) -> str:
    """``(1, 2, 4, 4)`` -> ``"1x2x4x4"``; a scalar gives ``""``."""
    return "x".join(str(int(s)) for s in shape)


@functools.lru_cache(maxsize=4096)
def _shape_text(shape: tuple[int, ...]) -> str:
    return shape_str(shape)


@functools.lru_cache(maxsize=256)
def _name_text(obj: Any) -> str:  # a dtype or a device: the few a recording sees, hashable
    return str(obj)


def parse_shape(text: str) -> tuple[int, ...]:
    """Inverse of :func:`shape_str`."""
    return tuple(int(s) for s in text.split("x")) if text else ()


def empty_events() -> pd.DataFrame:
    """An events table with no rows and the right columns and dtypes."""
    return events_from_values([])


#: Position of the statistics (``numel`` ... ``inf_count``) and of ``key`` in a row's values.
_STATS_AT = EVENT_COLUMNS.index("numel")
_KEY_AT = EVENT_COLUMNS.index("key")
_STAT_KEYS = EVENT_COLUMNS[_STATS_AT:_KEY_AT]

_seq_of = operator.itemgetter(0)

_INT_COLUMNS = ("seq", "step", "call", "numel", "nan_count", "inf_count")
_FLOAT_COLUMNS = ("mean", "std", "min", "max", "norm", "zero_frac")
_STR_COLUMNS = ("phase", "kind", "layer", "role", "index", "edit", "shape", "dtype", "device",
                "key")


def normalise_events(df: pd.DataFrame) -> pd.DataFrame:
    """Give an events table the canonical column order and dtypes (int64, float64, str)."""
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"events table lacks columns {missing}")
    out = df.loc[:, list(EVENT_COLUMNS)].copy()
    for c in _INT_COLUMNS:
        out[c] = out[c].astype("int64")
    for c in _FLOAT_COLUMNS:
        out[c] = out[c].astype("float64")
    for c in _STR_COLUMNS:
        out[c] = out[c].astype(str)
    return out.reset_index(drop=True)


def events_from_values(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """The events table of rows given as :meth:`Trace.event_values` tuples: the frame
    :func:`normalise_events` gives, built column by column (a watch segment holds thousands
    of rows; this is several times faster than building a frame of objects and converting)."""
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(EVENT_COLUMNS)
    data: dict[str, Any] = {}
    for c, values in zip(EVENT_COLUMNS, cols, strict=True):
        if c in _INT_COLUMNS:
            data[c] = np.array(values, dtype=np.int64)
        elif c in _FLOAT_COLUMNS:
            data[c] = np.array(values, dtype=np.float64)
        else:
            data[c] = pd.array([v if type(v) is str else str(v) for v in values], dtype="str")
    return pd.DataFrame(data)


class Trace(DisplayMixin):
    """What one recording produced: events, stored tensors and metadata.

    Args:
        events: an events DataFrame (columns :data:`EVENT_COLUMNS`), or ``None`` for an empty
            trace that :meth:`add_event` fills.
        tensors: mapping from key to tensor; may be lazy (the store passes a reader).
        meta: free-form metadata (model name, layers, edits, input description, budget...).
    """

    def __init__(self, events: pd.DataFrame | None = None,
                 tensors: Mapping[str, torch.Tensor] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self._rows: list[tuple[Any, ...]] = []  # event values, in EVENT_COLUMNS order
        self._frame: pd.DataFrame | None = (
            normalise_events(events) if events is not None else None)
        self._tensors: Mapping[str, torch.Tensor] = tensors if tensors is not None else {}
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.setdefault("truncated", False)
        self.meta.setdefault("stored_bytes", 0)

    # -- building -------------------------------------------------------------------------
    @staticmethod
    def event_row(seq: int, phase: str, kind: str, layer: str, role: str, tensor: torch.Tensor,
                  *, call: int = 0, index: str = "0", edit: str = "", step: int = 0,
                  stats: Mapping[str, float | int] | None = None, key: str = "") -> dict[str, Any]:
        """The one builder of an events row (columns :data:`EVENT_COLUMNS`).

        Args:
            seq: firing order.
            phase: ``"forward"`` or ``"backward"``.
            kind: the hook kind (:data:`hooklab.core.hooks.HOOK_KINDS`).
            layer: qualified module name (``""``: the root or a free tensor).
            role: one of :data:`ROLES`.
            tensor: the tensor the hook saw (shape, dtype, device and statistics come from it).
            call: index of the module call in this step.
            index: position in the hook's tuple or the parameter name.
            edit: the edit's JSON spec for an edit's before/after pair, else ``""``.
            step: training step.
            stats: :func:`tensor_stats` of ``tensor`` when already computed.
            key: key of the stored tensor (``""``: statistics only).
        """
        return dict(zip(EVENT_COLUMNS, Trace.event_values(
            seq, phase, kind, layer, role, tensor, call=call, index=index, edit=edit,
            step=step, stats=stats, key=key), strict=True))

    @staticmethod
    def event_values(seq: int, phase: str, kind: str, layer: str, role: str,
                     tensor: torch.Tensor, *, call: int = 0, index: str = "0", edit: str = "",
                     step: int = 0, stats: Mapping[str, float | int] | None = None,
                     key: str = "") -> tuple[Any, ...]:
        """:meth:`event_row` as a tuple in :data:`EVENT_COLUMNS` order (what a recorder
        appends with :meth:`add_values`, many times per training step)."""
        st = tensor_stats(tensor) if stats is None else stats
        return Trace.described_values(seq, phase, kind, layer, role, tensor.shape, tensor.dtype,
                                      tensor.device, st, call=call, index=index, edit=edit,
                                      step=step, key=key)

    @staticmethod
    def described_values(seq: int, phase: str, kind: str, layer: str, role: str,
                         shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                         stats: Mapping[str, float | int], *, call: int = 0, index: str = "0",
                         edit: str = "", step: int = 0, key: str = "") -> tuple[Any, ...]:
        """:meth:`event_values` of a tensor given by its shape, dtype, device and statistics
        (a recorder that summarised it in the hook and makes the row later)."""
        return (int(seq), int(step), phase, kind, layer, int(call), role, str(index), edit,
                _shape_text(tuple(shape)), _name_text(dtype), _name_text(device),
                *[stats[c] for c in _STAT_KEYS], key)

    def next_seq(self) -> int:
        """The ``seq`` of the next event appended (0 for an empty trace)."""
        if self._frame is not None:
            return int(self._frame["seq"].max()) + 1 if len(self._frame) else 0
        return max((int(r[0]) for r in self._rows), default=-1) + 1

    def record_event(self, phase: str, kind: str, layer: str, role: str, tensor: torch.Tensor,
                     *, call: int = 0, index: str = "0", edit: str = "", step: int = 0,
                     keep: bool = True, key: str | None = None,
                     payload: torch.Tensor | None = None) -> dict[str, Any]:
        """Append one event built by :meth:`event_row`, numbered :meth:`next_seq`.

        With ``keep`` the tensor is stored (detached, CPU, float32 copy, or ``payload`` as
        given) under ``key`` (default ``"t<seq>"``) and counted in ``meta["stored_bytes"]``.

        Example:
            >>> trace.record_event("forward", "forward_pre", "", "input", x, key="model_input")

        Returns:
            The row appended.
        """
        seq = self.next_seq()
        stored = None
        if keep:
            stored = (payload if payload is not None
                      else tensor.detach().to("cpu", torch.float32, copy=True))
            key = key or f"t{seq:07d}"
            self.meta["stored_bytes"] = self.stored_bytes + stored.numel() * stored.element_size()
        row = self.event_row(seq, phase, kind, layer, role, tensor, call=call, index=index,
                             edit=edit, step=step, key=(key or "") if keep else "")
        self.add_event(row, stored)
        return row

    def add_event(self, row: Mapping[str, Any], tensor: torch.Tensor | None = None) -> None:
        """Append one event; ``tensor`` (already detached/CPU/float32) is stored under row['key']."""
        missing = [c for c in EVENT_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"event row lacks columns {missing}")
        self.add_values(tuple(row[c] for c in EVENT_COLUMNS), tensor)

    def add_values(self, values: tuple[Any, ...], tensor: torch.Tensor | None = None) -> None:
        """:meth:`add_event` of a row given as :meth:`event_values` (no dict built)."""
        if self._frame is not None:
            self._rows = list(self._frame.itertuples(index=False, name=None))
            self._frame = None
        if tensor is not None:
            if not isinstance(self._tensors, dict):
                self._tensors = dict(self._tensors)
            self._tensors[values[_KEY_AT]] = tensor
        self._rows.append(values)

    # -- reading --------------------------------------------------------------------------
    @property
    def events(self) -> pd.DataFrame:
        """One row per hook firing, in firing order."""
        if self._frame is None:
            # in firing order: a recorder numbers its batched parameter gradients when they
            # arrive and adds them at the end of the backward pass (a stable sort, linear
            # on rows already in order)
            self._frame = events_from_values(sorted(self._rows, key=_seq_of))
            self._rows = []
        return self._frame

    def __len__(self) -> int:
        return len(self.events)

    @property
    def truncated(self) -> bool:
        """True when the byte budget ran out and some events kept statistics only."""
        return bool(self.meta.get("truncated", False))

    @property
    def stored_bytes(self) -> int:
        return int(self.meta.get("stored_bytes", 0))

    def tensor_keys(self) -> list[str]:
        return list(self._tensors.keys())

    def tensor(self, key: str) -> torch.Tensor:
        """The stored tensor for an event's ``key``; ``KeyError`` with a clear message if absent."""
        if not key:
            raise KeyError("this event kept statistics only (no tensor stored)")
        try:
            return self._tensors[key]
        except KeyError:
            raise KeyError(f"no stored tensor with key {key!r}") from None

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every stored tensor, loaded (reads lazily stored tensors into memory)."""
        return {k: self._tensors[k] for k in self._tensors.keys()}

    def select(self, **where: Any) -> pd.DataFrame:
        """Rows whose columns equal the given values, e.g. ``select(layer="conv1", role="output")``."""
        df = self.events
        mask = pd.Series(True, index=df.index)
        for col, val in where.items():
            mask &= df[col] == val
        return df[mask]

    def find(self, **where: Any) -> torch.Tensor:
        """The stored tensor of the single (first) event matching ``where``."""
        rows = self.select(**where)
        if rows.empty:
            raise KeyError(f"no event matches {where}")
        return self.tensor(rows.iloc[0]["key"])

    def __repr__(self) -> str:
        return (f"Trace({len(self)} events, {len(self._tensors)} tensors, "
                f"{self.stored_bytes} bytes{', truncated' if self.truncated else ''})")
