"""Reading across runs: the store listing and event queries over every run's Parquet file.

Used by :class:`hooklab.store.runs.TraceStore` (``list``, ``trash_list``, ``query``). Listing never
fails because of one run: a damaged run is a row with status ``"corrupt: <reason>"``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hooklab.core.edits import describe
from hooklab.core.errors import CorruptRunError, StoreError
from hooklab.core.trace import EVENT_COLUMNS
from hooklab.store import format as fmt
from hooklab.store import stream

log = logging.getLogger(__name__)

#: Columns of :meth:`hooklab.TraceStore.list`.
LIST_COLUMNS = ("run_id", "created", "author", "model", "page", "edits", "tags", "notes",
                "n_events", "status")
#: Columns identifying an event in :func:`query_runs` results (besides run_id, created).
ID_COLUMNS = ["seq", "step", "phase", "kind", "layer", "call", "role", "index", "edit"]


def read_run_manifest(path: Path, run_id: str) -> dict[str, Any]:
    """The validated manifest of the run directory ``path``, which must name ``run_id``
    (a one-shot run of format 1, or a streamed run: :mod:`hooklab.store.stream`)."""
    m = stream.read_manifest(path, f"run {run_id}")
    if m["run_id"] != run_id:
        raise CorruptRunError(f"run {run_id}: its manifest names run {m['run_id']!r}")
    return m


def normalise_tags(tags: str | Iterable[str] | None) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]``: split at commas (a tag never holds one),
    stripped, empty and repeated tags dropped."""
    if tags is None:
        return []
    items = [tags] if isinstance(tags, str) else list(tags)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise StoreError(f"tags must be strings, got {item!r}")
        for t in item.split(","):
            t = t.strip()
            if t and t not in out:
                out.append(t)
    return out


def summarise_edits(edits: Any) -> str:
    """A one-line description of ``meta["edits"]`` for listings: ``conv2=scale(0.5)``.

    The same text everywhere: :func:`hooklab.core.edits.describe`.
    """
    return describe(edits)



def list_row(base: Path, run_id: str) -> dict[str, Any]:
    """One listing row; a damaged run gives status ``corrupt: <reason>`` (and a warning).

    A streamed run's status is ``"live"``, ``"ended early"``, ``"failed"``, or ``"ok"`` once
    finished."""
    path = base / run_id
    row: dict[str, Any] = {c: "" for c in LIST_COLUMNS}
    row.update(run_id=run_id, n_events=0, status="ok")
    try:
        m = read_run_manifest(path, run_id)
        if stream.is_watch(m):
            stream.quick_check(path, m, f"run {run_id}")
            state = stream.run_status(m)
            row["status"] = "ok" if state == "finished" else state
        else:
            fmt.quick_check(path, m, f"run {run_id}")
    except (CorruptRunError, StoreError) as exc:
        reason = str(exc).removeprefix(f"run {run_id}: ")
        row["status"] = f"corrupt: {reason}"
        row["created"] = fmt.iso(fmt._dt.datetime.fromtimestamp(path.stat().st_mtime,
                                                                 fmt._dt.UTC))
        log.warning("run %s is corrupt: %s", run_id, reason)
        return row
    meta = m["meta"]
    row.update(created=m["created"], author=m["author"], notes=m["notes"],
               tags=",".join(m["tags"]), n_events=m["n_events"],
               model=str(meta.get("model", "")),
               page=str(meta.get("page", meta.get("kind", ""))),
               edits=summarise_edits(meta.get("edits")))
    return row


def runs_table(base: Path, ids: Sequence[str]) -> pd.DataFrame:
    """Listing rows of the runs ``ids`` under ``base``, newest first."""
    rows = []
    for rid in ids:
        try:
            rows.append(list_row(base, rid))
        except Exception as exc:  # listing never fails because of one run
            log.warning("skipping run %s in the listing: %s", rid, exc)
    df = pd.DataFrame(rows, columns=list(LIST_COLUMNS))
    df["n_events"] = df["n_events"].astype("int64")
    if len(df):
        df = df.sort_values(["created", "run_id"], ascending=False, kind="stable")
    return df.reset_index(drop=True)


def query_runs(root: Path, ids: Sequence[str], layer: str | Sequence[str] | None = None,
               role: str | Sequence[str] | None = None, column: str | Sequence[str] = "norm",
               kinds: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Event rows of the runs ``ids`` (see :meth:`hooklab.TraceStore.query`), oldest run first."""
    cols = [column] if isinstance(column, str) else list(column)
    bad = [c for c in cols if c not in EVENT_COLUMNS]
    if bad:
        raise StoreError(f"unknown event column(s) {bad}; choose from {list(EVENT_COLUMNS)}")
    filters = []
    for name, value in (("layer", layer), ("role", role), ("kind", kinds)):
        if value is not None:
            values = [value] if isinstance(value, str) else list(value)
            filters.append((name, "in", values))
    wanted = ID_COLUMNS + [c for c in cols if c not in ID_COLUMNS]
    frames = []
    for rid in ids:
        path = root / fmt.check_run_id(rid)
        try:
            if path.is_symlink() or not path.is_dir():
                raise StoreError(f"no run {rid!r}")
            m = read_run_manifest(path, rid)
            if stream.is_watch(m):
                df = stream.query_events(path, m, f"run {rid}", wanted, filters)
            else:
                fmt.check_files(path, m, f"run {rid}", hashes=False, names=(fmt.EVENTS,))
                df = fmt.read_events(path / fmt.EVENTS, f"run {rid}", columns=wanted,
                                     filters=filters)
        except StoreError as exc:
            log.warning("query skips run %s: %s", rid, exc)
            continue
        if len(df):
            df.insert(0, "created", m["created"])
            df.insert(0, "run_id", rid)
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["run_id", "created"] + wanted)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["created", "run_id", "seq"], kind="stable").reset_index(drop=True)
