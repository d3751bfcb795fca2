"""Tables of a watched training (:func:`hooklab.watch`) for the training figures: per-layer
matrices over steps, step downsampling, the first NaN/Inf, run-to-run ratios.

Inputs are a watch run's ``events`` (columns :data:`hooklab.core.trace.EVENT_COLUMNS`, one row
per hook firing of a recorded step) and ``scalars`` (columns ``step``, ``name``, ``value``: the
user's ``w.step(loss=...)`` values, ``update_ratio/<param>`` and ``dead_frac/<layer>``). Pure
functions: no store (:mod:`hooklab.studies.training_runs` reads the runs), no figures (those are
:mod:`hooklab.charts.training`).

A *matrix* is a DataFrame with one row per layer (or scalar name), in forward order, and one
column per recorded step (ascending int), NaN where nothing was recorded.

Example:
    >>> m = norm_matrix(run.events, "grad_output")          # layer x step, ||dL/d out||
    >>> small, binning = downsample_steps(m, 600, "mean")   # at most 600 columns
    >>> binning.note()          # 'showing 600 of 10,000 steps (mean per bin of 17)'
    >>> first_nonfinite(run.events)                          # NonFinite(step=37, layer='conv2', ...)
    >>> ratio_matrix(a.events, b.events)                     # B / A per layer and step
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = ["ROLES", "DERIVED_PREFIXES", "MODEL_LAYER", "StepBinning", "NonFinite",
           "ScalarNonFinite", "layer_order", "norm_matrix", "binning_for", "downsample_steps",
           "scalar_matrix", "user_scalar_names", "last_scalars", "first_nonfinite",
           "first_nonfinite_scalar", "ratio_matrix", "TRAINING_COLUMNS"]

#: Roles a per-layer norm matrix can show, with their English names.
ROLES: dict[str, str] = {"grad_output": "output gradient", "param_grad": "parameter gradient",
                         "output": "activation"}
#: Scalar name prefixes the watch derives itself (everything else is the user's).
DERIVED_PREFIXES: tuple[str, ...] = ("update_ratio/", "dead_frac/")
#: Event columns the training figures read (fewer columns: a long run opens faster).
TRAINING_COLUMNS: list[str] = ["seq", "step", "layer", "role", "index", "norm", "zero_frac",
                               "nan_count", "inf_count"]
#: Display name of events about the model as a whole (layer ``""``).
MODEL_LAYER = "(model)"

How = Literal["mean", "max"]


def _codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and their labels (as str) of a string or categorical column, without
    converting every row to a Python string (a long run has millions of rows)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(np.int64), [str(c) for c in col.cat.categories]
    codes, uniques = pd.factorize(col, sort=False)
    return codes.astype(np.int64), [str(u) for u in uniques]


def _display(name: str) -> str:
    return name or MODEL_LAYER


def _first_order(codes: np.ndarray, n: int, key: np.ndarray) -> list[int]:
    """Codes ``0..n-1`` that occur, ordered by their smallest ``key``."""
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, key)
    present = np.flatnonzero(first != np.iinfo(np.int64).max)
    return [int(c) for c in present[np.argsort(first[present], kind="stable")]]


def _order_key(events: pd.DataFrame) -> np.ndarray:
    seq = events["seq"].to_numpy(np.int64)
    return events["step"].to_numpy(np.int64) * (int(seq.max()) + 1) + seq


def layer_order(events: pd.DataFrame) -> list[str]:
    """Layers in forward order: ordered by the step and firing number (``seq``) of their first
    event (outputs fire in the forward pass, before any gradient). ``""`` is ``"(model)"``."""
    if events.empty:
        return []
    codes, labels = _codes(events["layer"])
    return [_display(labels[c]) for c in _first_order(codes, len(labels), _order_key(events))]


def _cells(row_codes: np.ndarray, n_rows: int, col_codes: np.ndarray, n_cols: int,
           values: np.ndarray, how: str) -> np.ndarray:
    """A rows x cols float64 matrix from coded rows: ``"rss"`` = sqrt of the summed squares,
    ``"mean"``, or ``"last"`` (the last row of a cell wins); NaN where a cell has no row."""
    flat = row_codes * n_cols + col_codes
    size = n_rows * n_cols
    if how == "last":
        out = np.full(size, np.nan)
        rev = flat[::-1]
        _, first_in_rev = np.unique(rev, return_index=True)
        last = len(flat) - 1 - first_in_rev  # each cell's last row
        out[flat[last]] = values[last]
        return out.reshape(n_rows, n_cols)
    count = np.bincount(flat, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        total = np.bincount(flat, weights=values * values if how == "rss" else values,
                            minlength=size)
        out = np.sqrt(total) if how == "rss" else total / np.maximum(count, 1)
    out[count == 0] = np.nan
    return out.reshape(n_rows, n_cols)


def norm_matrix(events: pd.DataFrame, role: str = "grad_output", stat: str = "norm",
                steps: list[int] | None = None) -> pd.DataFrame:
    """Per-layer ``stat`` of ``role`` events, layer x step.

    Several events of one layer in one step (a module called twice, or a layer's parameters
    ``weight`` and ``bias`` for ``param_grad``) combine as ``sqrt(Σ norm²)`` for ``stat="norm"``
    (the norm of all of them together) and as the mean for any other statistic. Output gradients
    are the gradient *as it arrives* at the layer (before an edit there: the edit's ``edited``
    events are not included). A NaN/Inf norm stays NaN/Inf.

    Args:
        events: a watch run's (or a trace's) events.
        role: ``"grad_output"``, ``"param_grad"`` or ``"output"`` (activation), see :data:`ROLES`.
        stat: an events statistic column (``"norm"``, ``"zero_frac"``, ``"mean"``...).
        steps: the columns (default: every step in ``events``, so matrices of different roles
            line up); steps without an event of this role are NaN.

    Returns:
        float64 DataFrame, index = layers in forward order (:func:`layer_order`) that have an
        event of this role, columns = steps (int, ascending).
    """
    if stat not in events.columns:
        raise ValueError(f"unknown statistic {stat!r}; events have {list(events.columns)}")
    all_steps = (np.unique(events["step"].to_numpy(np.int64)) if steps is None
                 else np.asarray(sorted(int(s) for s in steps), dtype=np.int64))
    cols = pd.Index([int(s) for s in all_steps], name="step")
    mask = (events["role"] == role).to_numpy()
    if not mask.any():
        return pd.DataFrame(index=pd.Index([], name="layer"), columns=cols, dtype="float64")
    codes, labels = _codes(events["layer"])
    key = _order_key(events)
    sel_steps = events["step"].to_numpy(np.int64)[mask]
    pos = np.searchsorted(all_steps, sel_steps)
    keep = (pos < len(all_steps)) & (all_steps[np.minimum(pos, len(all_steps) - 1)] == sel_steps)
    sel_codes = codes[mask][keep]
    mat = _cells(sel_codes, len(labels), pos[keep], len(all_steps),
                 events[stat].to_numpy(np.float64)[mask][keep],
                 "rss" if stat == "norm" else "mean")
    present = set(np.unique(sel_codes).tolist())
    order = [c for c in _first_order(codes, len(labels), key) if c in present]
    return pd.DataFrame(mat[order], index=pd.Index([_display(labels[c]) for c in order],
                                                   name="layer"), columns=cols)


@dataclass(frozen=True)
class StepBinning:
    """What :func:`downsample_steps` did."""

    total: int  # columns (recorded steps) before
    shown: int  # columns after
    size: int  # consecutive columns per bin (1: nothing was downsampled)
    how: str  # "mean" or "max": how a bin's values were combined

    @property
    def downsampled(self) -> bool:
        """Whether columns were combined."""
        return self.size > 1

    def note(self) -> str:
        """``"showing 600 of 10,000 steps (mean per bin of 17)"``; ``""`` when not downsampled."""
        if not self.downsampled:
            return ""
        return (f"showing {self.shown:,} of {self.total:,} steps "
                f"({self.how} per bin of {self.size})")


def binning_for(n_steps: int, max_steps: int = 600, how: How = "mean") -> StepBinning:
    """What :func:`downsample_steps` does to ``n_steps`` columns (without the data): bins of
    ``ceil(n_steps / max_steps)`` consecutive steps."""
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    if n_steps <= max_steps:
        return StepBinning(n_steps, n_steps, 1, how)
    size = math.ceil(n_steps / max_steps)
    return StepBinning(n_steps, math.ceil(n_steps / size), size, how)


def downsample_steps(matrix: pd.DataFrame, max_steps: int = 600, how: How = "mean"
                     ) -> tuple[pd.DataFrame, StepBinning]:
    """At most ``max_steps`` columns: consecutive columns are combined in equal bins.

    With ``n`` columns, a bin holds ``size = ceil(n / max_steps)`` consecutive columns (the last
    bin may hold fewer); the result has ``ceil(n / size)`` columns, each labelled by the *first*
    step of its bin. ``how="mean"`` averages a bin, ``"max"`` takes its largest value (keeps
    spikes: an exploding gradient stays visible). Missing values (NaN) are skipped; a bin with
    none is NaN; an Inf in a bin makes its max (and mean) Inf.

    Returns:
        ``(matrix, binning)``; the matrix is returned unchanged when it already fits.
    """
    n = matrix.shape[1]
    binning = binning_for(n, max_steps, how)
    if not binning.downsampled:
        return matrix, binning
    size, bins = binning.size, binning.shown
    a = matrix.to_numpy(np.float64)
    padded = np.full((a.shape[0], bins * size), np.nan)
    padded[:, :n] = a
    cube = padded.reshape(a.shape[0], bins, size)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins stay NaN
        out = np.nanmean(cube, axis=2) if how == "mean" else np.nanmax(cube, axis=2)
    cols = pd.Index(list(matrix.columns[::size]), name=matrix.columns.name)
    small = pd.DataFrame(out, index=matrix.index, columns=cols)
    return small, StepBinning(n, bins, size, how)


def _is_derived(name: str) -> bool:
    return name.startswith(DERIVED_PREFIXES)


def user_scalar_names(scalars: pd.DataFrame) -> list[str]:
    """The user's scalar names (``loss``, ``acc``...), in order of first appearance."""
    if scalars.empty:
        return []
    codes, labels = _codes(scalars["name"])
    order = _first_order(codes, len(labels), np.arange(len(codes), dtype=np.int64))
    return [labels[c] for c in order if not _is_derived(labels[c])]


def scalar_matrix(scalars: pd.DataFrame, prefix: str | None = None,
                  names: list[str] | None = None) -> pd.DataFrame:
    """Scalars as a matrix, name x step (a name logged twice in a step: the last value).

    ``prefix`` (``"update_ratio/"``, ``"dead_frac/"``) keeps those names, with the prefix
    stripped (``"dead_frac/conv1"`` -> ``"conv1"``); ``names`` keeps exactly those (default with
    no prefix: the user's scalars, :func:`user_scalar_names`). Rows keep first-appearance order
    (or the order of ``names``).
    """
    empty = pd.DataFrame(index=pd.Index([], name="name"), columns=pd.Index([], name="step"),
                         dtype="float64")
    if scalars.empty:
        return empty
    codes, labels = _codes(scalars["name"])
    order = _first_order(codes, len(labels), np.arange(len(codes), dtype=np.int64))
    if prefix is not None:
        rows = [c for c in order if labels[c].startswith(prefix)]
    elif names is not None:
        where = {labels[c]: c for c in order}
        rows = [where[n] for n in names if n in where]
    else:
        rows = [c for c in order if not _is_derived(labels[c])]
    if not rows:
        return empty
    lookup = np.full(len(labels), -1, dtype=np.int64)
    lookup[rows] = np.arange(len(rows))
    row_of = lookup[codes]
    mask = row_of >= 0
    step = scalars["step"].to_numpy(np.int64)[mask]
    steps, col = np.unique(step, return_inverse=True)
    mat = _cells(row_of[mask], len(rows), col.reshape(-1), len(steps),
                 scalars["value"].to_numpy(np.float64)[mask], "last")
    cut = len(prefix) if prefix is not None else 0
    return pd.DataFrame(mat, index=pd.Index([labels[c][cut:] for c in rows], name="name"),
                        columns=pd.Index([int(x) for x in steps], name="step"))


def last_scalars(scalars: pd.DataFrame) -> dict[str, tuple[int, float]]:
    """``{name: (step, value)}`` of each user scalar's latest step."""
    out: dict[str, tuple[int, float]] = {}
    names = user_scalar_names(scalars)
    if not names:
        return out
    sel = scalars[scalars["name"].isin(names)].sort_values("step", kind="stable")
    last = sel.drop_duplicates("name", keep="last").set_index("name")
    for n in names:
        out[n] = (int(last.at[n, "step"]), float(last.at[n, "value"]))
    return out


@dataclass(frozen=True)
class NonFinite:
    """Where the first NaN or Inf appeared in a run's events."""

    step: int  # training step
    layer: str  # layer name ("(model)" for the model as a whole)
    role: str  # event role: "output", "grad_output", "param_grad", ...
    index: str  # parameter name for a param_grad event, else the tuple position
    seq: int  # firing number within the step
    nan_count: int
    inf_count: int

    def text(self) -> str:
        """``"step 37, layer conv2, output gradient: 12 NaN, 0 Inf"``."""
        what = ROLES.get(self.role, self.role)
        if self.role == "param_grad" and self.index:
            what += f" ({self.index})"
        return (f"step {self.step}, layer {self.layer}, {what}: "
                f"{self.nan_count:,} NaN, {self.inf_count:,} Inf")


def first_nonfinite(events: pd.DataFrame) -> NonFinite | None:
    """The first event (lowest step, then firing order) with a NaN or Inf value; None when every
    recorded value is finite. In the forward pass that is the layer that produced it; when only
    gradients are non-finite, the first layer the backward pass reached with one."""
    if events.empty:
        return None
    bad = events[(events["nan_count"] > 0) | (events["inf_count"] > 0)]
    if bad.empty:
        return None
    row = bad.sort_values(["step", "seq"], kind="stable").iloc[0]
    return NonFinite(step=int(row["step"]), layer=str(row["layer"]) or MODEL_LAYER,
                     role=str(row["role"]), index=str(row["index"]), seq=int(row["seq"]),
                     nan_count=int(row["nan_count"]), inf_count=int(row["inf_count"]))


@dataclass(frozen=True)
class ScalarNonFinite:
    """The first step where one of the user's scalars (e.g. the loss) was NaN or Inf."""

    step: int
    name: str
    value: float

    def text(self) -> str:
        """``"step 41: loss = nan"``."""
        return f"step {self.step}: {self.name} = {self.value}"


def first_nonfinite_scalar(scalars: pd.DataFrame) -> ScalarNonFinite | None:
    """The first user scalar (lowest step, then logging order) that is NaN or Inf."""
    names = user_scalar_names(scalars)
    if not names:
        return None
    sel = scalars[scalars["name"].isin(names)]
    bad = sel[~np.isfinite(sel["value"].to_numpy(np.float64))]
    if bad.empty:
        return None
    row = bad.sort_values("step", kind="stable").iloc[0]
    return ScalarNonFinite(int(row["step"]), str(row["name"]), float(row["value"]))


def ratio_matrix(events_a: pd.DataFrame, events_b: pd.DataFrame, role: str = "grad_output"
                 ) -> pd.DataFrame:
    """Per-layer norm ratio ``B / A`` over steps (:func:`norm_matrix` of each run).

    Rows: layers of both runs, in A's forward order; columns: steps recorded in both. NaN where
    A's norm is 0 or either value is missing or not finite. Under ``conv2=scale(0.5)`` in B
    and the same seed and data, step 0 shows 0.5 at every layer upstream of conv2.
    """
    a, b = norm_matrix(events_a, role), norm_matrix(events_b, role)
    in_b = set(b.index)
    layers = [x for x in a.index if x in in_b]
    b_steps = set(b.columns)
    steps = [s for s in a.columns if s in b_steps]
    va = a.loc[layers, steps].to_numpy(np.float64)
    vb = b.loc[layers, steps].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = vb / va
    r[~np.isfinite(r)] = np.nan
    out = pd.DataFrame(r, index=pd.Index(layers, name="layer"),
                       columns=pd.Index(steps, name="step"))
    return out
