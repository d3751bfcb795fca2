"""Streamed ("watch") runs: a run directory that grows by segments while a training goes on.

Layout, beside the one-shot runs of the store root::

    <root>/<run_id>/manifest.json                      rewritten atomically at each commit
    <root>/<run_id>/seg-000000.events.parquet          events of the segment's recorded steps
    <root>/<run_id>/seg-000000.scalars.parquet         step, name, value (every step's scalars)
    <root>/<run_id>/seg-000000.tensors.safetensors     only when the segment kept tensors

A segment's files are written and fsynced *before* the manifest that names them; the manifest
is written to a temporary file, fsynced and ``os.replace``-d, then the directory is fsynced. A
reader therefore sees whole segments only; a file the manifest does not name (a segment whose
writer was killed) is ignored. The manifest (``format_version`` 2, ``kind: "watch"``) lists
the committed segments with their files' sha256 and sizes, and ``status``: ``"live"`` while the
writer runs, ``"finished"`` after the ``with`` exits, ``"failed"`` (with ``error``) when the
training loop raised. A run still marked live whose writer is gone reads as ``"ended early"``:
on the writer's machine when its pid is not alive, elsewhere when its heartbeat is older than
:data:`STALE_SECONDS`.

Reading: :func:`open_watch` (also ``TraceStore.watch_run``) returns a :class:`WatchRun`;
``TraceStore.load`` of a watch run returns a :class:`~hooklab.core.trace.Trace` of every
committed event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hooklab.core.display import DisplayMixin
from hooklab.core.errors import CorruptRunError, StoreError
from hooklab.core.trace import EVENT_COLUMNS, Trace, normalise_events
from hooklab.recording.watch import SCALAR_COLUMNS, Segment
from hooklab.store import format as fmt
from hooklab.store.access import Identity, saved_author


class TraceStore(Protocol):
    """What this module needs of a store (:class:`hooklab.store.runs.TraceStore` is one; not
    imported here, since runs imports this module)."""

    root: Path
    durable: bool

    def _run_dir(self, run_id: str) -> Path: ...

    def is_taken(self, run_id: str) -> bool: ...

    def make_temp_dir(self) -> Path: ...

    def commit_dir(self, tmp: Path, run_id: str) -> None: ...

log = logging.getLogger(__name__)

__all__ = ["STALE_SECONDS", "WATCH_FORMAT_VERSION", "WATCH_KIND", "StreamWriter", "WatchRun",
           "is_watch", "open_watch", "pid_alive", "read_manifest", "run_status"]

WATCH_KIND = "watch"
#: Manifest version of a streamed run (one-shot runs stay at format version 1; an older
#: hooklab refuses a streamed run with "unknown format version 2, upgrade hooklab").
WATCH_FORMAT_VERSION = 2
#: Statuses written in a manifest; readers add "ended early".
STATUSES = ("live", "finished", "failed")
#: A live run whose writer is on another machine and whose heartbeat is older than this reads
#: as "ended early".
STALE_SECONDS = 600.0
_SEG_FILE_RE = re.compile(r"seg-\d{6}\.(events\.parquet|scalars\.parquet|tensors\.safetensors)")
_PARTS = ("events", "scalars", "tensors")
#: String columns of the events table, read as pandas categoricals by :func:`open_watch`.
CATEGORY_COLUMNS = ("phase", "kind", "layer", "role", "index", "edit", "shape", "dtype",
                    "device")
_HOSTNAME = socket.gethostname()


def seg_file(index: int, part: str) -> str:
    """``seg-000003.events.parquet`` and its siblings."""
    ext = "safetensors" if part == "tensors" else "parquet"
    return f"seg-{index:06d}.{part}.{ext}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is alive (a zombie counts as dead)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


# -- manifest ------------------------------------------------------------------------------------
def is_watch(manifest: Mapping[str, Any]) -> bool:
    """True for the manifest of a streamed run."""
    return manifest.get("kind") == WATCH_KIND


def _bad(where: str, what: str) -> CorruptRunError:
    return CorruptRunError(f"{where}: {what}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def validate_watch_manifest(m: Any, where: str) -> dict[str, Any]:
    """Check the structure of a streamed run's manifest; return it unchanged."""
    if not isinstance(m, dict) or m.get("format") != fmt.FORMAT_NAME or not is_watch(m):
        raise _bad(where, "not a hooklab streamed run manifest")
    if m.get("format_version") != WATCH_FORMAT_VERSION or isinstance(m.get("format_version"),
                                                                      bool):
        raise _bad(where, f"unknown streamed-run format version {m.get('format_version')!r} "
                          f"(this hooklab reads {WATCH_FORMAT_VERSION}; upgrade hooklab)")
    rid = m.get("run_id")
    if not isinstance(rid, str) or not fmt._RUN_ID_RE.fullmatch(rid):
        raise _bad(where, f"manifest run id {rid!r} is not a valid run id")
    for key in ("created", "author", "notes", "error"):
        if not isinstance(m.get(key), str):
            raise _bad(where, f"manifest field {key!r} is missing or not a string")
    if not isinstance(m.get("tags"), list) or not all(isinstance(t, str) for t in m["tags"]):
        raise _bad(where, "manifest tags must be a list of strings")
    if not isinstance(m.get("meta"), dict):
        raise _bad(where, "manifest meta must be an object")
    if m.get("status") not in STATUSES:
        raise _bad(where, f"manifest status {m.get('status')!r} is not one of {STATUSES}")
    writer = m.get("writer")
    if (not isinstance(writer, dict) or not _is_int(writer.get("pid"))
            or not isinstance(writer.get("host"), str)
            or not isinstance(writer.get("heartbeat"), (int, float))):
        raise _bad(where, "manifest writer needs pid, host and heartbeat")
    for key in ("n_events", "n_tensors", "steps_done"):
        if not _is_int(m.get(key)):
            raise _bad(where, f"manifest {key} must be a non-negative integer")
    segments = m.get("segments")
    if not isinstance(segments, list):
        raise _bad(where, "manifest segments must be a list")
    for i, seg in enumerate(segments):
        _validate_segment(i, seg, where)
    if (sum(seg["n_events"] for seg in segments) != m["n_events"]
            or sum(seg["n_tensors"] for seg in segments) != m["n_tensors"]):
        raise _bad(where, "manifest totals do not match its segments")
    return m


def _validate_segment(i: int, seg: Any, where: str) -> None:
    """Check one entry of a streamed manifest's ``segments`` list."""
    if not isinstance(seg, dict) or seg.get("index") != i:
        raise _bad(where, f"segment entry {i} is malformed")
    steps = seg.get("steps")
    if not isinstance(steps, list) or not all(_is_int(s) for s in steps):
        raise _bad(where, f"segment {i}: steps must be non-negative integers")
    for key in ("n_events", "n_tensors", "n_scalars"):
        if not _is_int(seg.get(key)):
            raise _bad(where, f"segment {i}: {key} must be a non-negative integer")
    files = seg.get("files")
    if not isinstance(files, dict) or not {"events", "scalars"} <= set(files) \
            or not set(files) <= set(_PARTS):
        raise _bad(where, f"segment {i}: files must name events, scalars (and tensors)")
    for part, info in files.items():
        if (not isinstance(info, dict) or info.get("name") != seg_file(i, part)
                or not _SEG_FILE_RE.fullmatch(info["name"])
                or not isinstance(info.get("sha256"), str)
                or not fmt._SHA_RE.fullmatch(info["sha256"]) or not _is_int(info.get("bytes"))):
            raise _bad(where, f"segment {i}: entry for {part} needs name, sha256 and bytes")
    if (seg["n_tensors"] > 0) != ("tensors" in files):
        raise _bad(where, f"segment {i}: tensors file and tensor count disagree")


def read_manifest(directory: Path, where: str) -> dict[str, Any]:
    """Read and validate the manifest of any run directory: one-shot (format 1) or streamed."""
    path = directory / fmt.MANIFEST
    st = fmt.regular_file(path, where)
    if st.st_size > fmt.MAX_MANIFEST_BYTES:
        raise CorruptRunError(f"{where}: manifest is larger than {fmt.MAX_MANIFEST_BYTES} bytes")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptRunError(f"{where}: cannot read manifest.json ({exc})") from exc
    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRunError(f"{where}: manifest.json is not valid JSON ({exc})") from exc
    if isinstance(m, dict) and is_watch(m):
        return validate_watch_manifest(m, where)
    return fmt.validate_manifest(m, where)


def run_status(manifest: Mapping[str, Any], now: float | None = None) -> str:
    """``"live"``, ``"finished"``, ``"failed"`` or ``"ended early"`` (live, writer gone)."""
    status = str(manifest["status"])
    if status != "live":
        return status
    writer = manifest["writer"]
    if writer["host"] == _HOSTNAME:
        return "live" if pid_alive(int(writer["pid"])) else "ended early"
    age = (time.time() if now is None else now) - float(writer["heartbeat"])
    return "ended early" if age > STALE_SECONDS else "live"


def steps_of(manifest: Mapping[str, Any]) -> list[int]:
    """Committed recorded steps, ascending."""
    return sorted(s for seg in manifest["segments"] for s in seg["steps"])


# -- checks and reading ----------------------------------------------------------------------
def check_segments(directory: Path, manifest: Mapping[str, Any], where: str, *,
                   hashes: bool) -> None:
    """Every committed segment file is a regular file of its size (and sha256)."""
    for seg in manifest["segments"]:
        for info in seg["files"].values():
            path = directory / info["name"]
            st = fmt.regular_file(path, where)
            if st.st_size != info["bytes"]:
                raise CorruptRunError(f"{where}: {info['name']} has {st.st_size} bytes, the "
                                      f"manifest says {info['bytes']} (truncated or modified)")
            if hashes and fmt.sha256_file(path) != info["sha256"]:
                raise CorruptRunError(f"{where}: {info['name']} does not match the sha256 in "
                                      "its manifest (modified or damaged)")


def quick_check(directory: Path, manifest: Mapping[str, Any], where: str) -> None:
    """Cheap check for listings: committed files present with their sizes."""
    check_segments(directory, manifest, where, hashes=False)


def _read_table(path: Path, where: str, columns: list[str] | None = None,
                dictionary: tuple[str, ...] = ()) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns,
                             read_dictionary=[c for c in dictionary
                                              if columns is None or c in columns] or None)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise CorruptRunError(f"{where}: {path.name} is unreadable ({exc})") from exc


def _concat(tables: list[pa.Table], where: str) -> pd.DataFrame:
    try:
        return pa.concat_tables(tables).unify_dictionaries().to_pandas()
    except (pa.ArrowException, ValueError) as exc:
        raise CorruptRunError(f"{where}: segments have different schemas ({exc})") from exc


def read_segment_events(directory: Path, manifest: Mapping[str, Any], where: str, *,
                        columns: list[str] | None = None,
                        categorical: bool = True) -> pd.DataFrame:
    """Events of every committed segment, in firing order (string columns categorical)."""
    cols = list(EVENT_COLUMNS) if columns is None else list(columns)
    bad = [c for c in cols if c not in EVENT_COLUMNS]
    if bad:
        raise StoreError(f"unknown event column(s) {bad}; choose from {list(EVENT_COLUMNS)}")
    tables = []
    for seg in manifest["segments"]:
        t = _read_table(directory / seg["files"]["events"]["name"], where, cols,
                        CATEGORY_COLUMNS if categorical else ())
        if t.num_rows != seg["n_events"]:
            raise CorruptRunError(f"{where}: segment {seg['index']} has {t.num_rows} events, "
                                  f"the manifest says {seg['n_events']}")
        tables.append(t)
    if not tables:
        empty = Trace().events
        return empty[cols].astype({c: "category" for c in cols
                                   if categorical and c in CATEGORY_COLUMNS})
    return _concat(tables, where)


def read_segment_scalars(directory: Path, manifest: Mapping[str, Any], where: str
                         ) -> pd.DataFrame:
    """Scalars of every committed segment: columns step (int64), name (category), value."""
    tables = []
    for seg in manifest["segments"]:
        t = _read_table(directory / seg["files"]["scalars"]["name"], where,
                        list(SCALAR_COLUMNS), ("name",))
        if t.num_rows != seg["n_scalars"]:
            raise CorruptRunError(f"{where}: segment {seg['index']} has {t.num_rows} scalars, "
                                  f"the manifest says {seg['n_scalars']}")
        tables.append(t)
    if not tables:
        return pd.DataFrame({"step": pd.Series([], dtype="int64"),
                             "name": pd.Series([], dtype="category"),
                             "value": pd.Series([], dtype="float64")})
    return _concat(tables, where)


class SegmentTensors(Mapping[str, torch.Tensor]):
    """Read-only mapping over the tensors of every committed segment, read lazily: a
    segment's safetensors file is opened on first access to one of its keys."""

    def __init__(self, directory: Path, manifest: Mapping[str, Any], where: str,
                 key_segment: dict[str, int]) -> None:
        self._dir = directory
        self._where = where
        self._files = {seg["index"]: seg["files"]["tensors"]["name"]
                       for seg in manifest["segments"] if "tensors" in seg["files"]}
        self._key_segment = key_segment
        self._open: dict[int, fmt.LazyTensors] = {}

    def _segment(self, index: int) -> fmt.LazyTensors:
        if index not in self._open:
            self._open[index] = fmt.LazyTensors(self._dir / self._files[index], self._where)
        return self._open[index]

    def __getitem__(self, key: str) -> torch.Tensor:
        index = self._key_segment[key]  # KeyError for an unknown key
        return self._segment(index)[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._key_segment)

    def __len__(self) -> int:
        return len(self._key_segment)

    def __contains__(self, key: object) -> bool:
        return key in self._key_segment

    def check(self) -> None:
        """Every segment's tensors file is readable and holds the keys its events name."""
        for index in self._files:
            lazy = self._segment(index)
            missing = [k for k, i in self._key_segment.items() if i == index and k not in lazy]
            if missing:
                raise CorruptRunError(f"{self._where}: events refer to tensors that are not "
                                      f"stored: {missing[:5]}")


def _key_segments(directory: Path, manifest: Mapping[str, Any], where: str
                  ) -> dict[str, int]:
    """Map each stored tensor key to the segment that holds it: the events' ``key`` column of
    the segments that store tensors (the others are never read for this)."""
    out: dict[str, int] = {}
    for seg in manifest["segments"]:
        if "tensors" not in seg["files"]:
            continue
        keys = _read_table(directory / seg["files"]["events"]["name"], where, ["key"])
        for k in keys.column("key").to_pylist():
            if k:
                out[str(k)] = seg["index"]
    return out


def _check_keys(manifest: Mapping[str, Any], where: str, events: pd.DataFrame) -> None:
    """A segment without a tensors file names no tensor (full reads only)."""
    pos = 0
    for seg in manifest["segments"]:
        n = seg["n_events"]
        if "tensors" not in seg["files"] and n and (events["key"].iloc[pos:pos + n] != "").any():
            raise CorruptRunError(f"{where}: segment {seg['index']} names tensors but stores "
                                  "none")
        pos += n


@dataclass
class WatchRun(DisplayMixin):
    """A streamed run as committed so far (see :func:`open_watch`).

    ``events`` has :data:`~hooklab.core.trace.EVENT_COLUMNS` (or the columns asked for), the
    string columns as pandas categoricals; ``scalars`` has columns step, name, value with one
    row per scalar per step (``loss``, ``update_ratio/<param>``, ``dead_frac/<layer>``...).
    """

    run_id: str
    manifest: dict[str, Any]
    status: str  # "live", "finished", "failed" or "ended early"
    events: pd.DataFrame
    scalars: pd.DataFrame
    steps: list[int]  # committed recorded steps, ascending
    _tensors: SegmentTensors | None = field(default=None, repr=False)

    @property
    def segments(self) -> int:
        """Number of committed segments (grows while the run is live: a cache key)."""
        return len(self.manifest["segments"])

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.manifest["meta"])

    @property
    def steps_done(self) -> int:
        """Training steps the writer had ended at its last commit (recorded or not)."""
        return int(self.manifest["steps_done"])

    @property
    def error(self) -> str:
        """Why a failed run failed ("" otherwise)."""
        return str(self.manifest.get("error", ""))

    @property
    def live(self) -> bool:
        return self.status == "live"

    def scalar(self, name: str) -> pd.Series:
        """One scalar over steps, indexed by step (e.g. ``run.scalar("loss")``)."""
        rows = self.scalars[self.scalars["name"] == name]
        return pd.Series(rows["value"].to_numpy(), index=rows["step"].to_numpy(), name=name)

    def tensor(self, key: str) -> torch.Tensor:
        """A stored tensor (steps in ``tensors_at``), read from the segment that holds it."""
        if not key:
            raise KeyError("this event kept statistics only (no tensor stored)")
        if self._tensors is None or key not in self._tensors:
            raise KeyError(f"no stored tensor with key {key!r} in run {self.run_id}")
        return self._tensors[key]

    def trace(self) -> Trace:
        """Every committed event as a :class:`~hooklab.core.trace.Trace` (plain str columns)."""
        events = self.events
        if set(EVENT_COLUMNS) - set(events.columns):
            raise StoreError("this WatchRun was opened with a subset of the event columns")
        return Trace(events=events.astype({c: str for c in CATEGORY_COLUMNS}),
                     tensors=self._tensors or {}, meta=self.meta)

    def __repr__(self) -> str:
        return (f"WatchRun({self.run_id!r}, {self.status}, {len(self.steps)} recorded steps, "
                f"{len(self.events)} events, {self.segments} segments)")


def open_watch(store: TraceStore, run_id: str, *, columns: list[str] | None = None,
               verify: bool = False) -> WatchRun:
    """Open the streamed run ``run_id`` of ``store`` as committed so far.

    Args:
        store: a :class:`~hooklab.store.runs.TraceStore`.
        run_id: the run (``w.run_id`` of the watcher that wrote it).
        columns: event columns to read (default all; fewer is faster for long runs).
        verify: also check every segment file's sha256 (about 1 s per GB).

    Raises:
        StoreError: no such run, or it is not a streamed run.
        CorruptRunError: a committed segment is missing or damaged.
    """
    path = store._run_dir(run_id)
    where = f"run {run_id}"
    manifest = read_manifest(path, where)
    if manifest["run_id"] != run_id:
        raise CorruptRunError(f"{where}: its manifest names run {manifest['run_id']!r}")
    if not is_watch(manifest):
        raise StoreError(f"run {run_id} is a one-shot run, not a streamed (watch) run; open it "
                         "with TraceStore.load")
    return _open(path, manifest, where, columns=columns, verify=verify)


def _open(path: Path, manifest: dict[str, Any], where: str, *, columns: list[str] | None,
          verify: bool) -> WatchRun:
    check_segments(path, manifest, where, hashes=verify)
    events = read_segment_events(path, manifest, where, columns=columns)
    tensors = SegmentTensors(path, manifest, where, _key_segments(path, manifest, where))
    if verify:
        tensors.check()
        if "key" in events.columns:
            _check_keys(manifest, where, events)
    return WatchRun(run_id=manifest["run_id"], manifest=manifest, status=run_status(manifest),
                    events=events, scalars=read_segment_scalars(path, manifest, where),
                    steps=steps_of(manifest), _tensors=tensors)


def load_trace(path: Path, manifest: dict[str, Any], where: str, *, verify: bool) -> Trace:
    """``TraceStore.load`` of a streamed run: every committed event (plain str columns)."""
    run = _open(path, manifest, where, columns=None, verify=verify)
    events = normalise_events(run.events.astype({c: str for c in CATEGORY_COLUMNS}))
    meta = {**run.meta, "status": run.status, "steps": len(run.steps)}
    return Trace(events=events, tensors=run._tensors or {}, meta=meta)


def query_events(path: Path, manifest: dict[str, Any], where: str, columns: list[str],
                 filters: list[tuple[str, str, Any]]) -> pd.DataFrame:
    """Event rows of a streamed run for :meth:`TraceStore.query` (columns, row filters)."""
    check_segments(path, manifest, where, hashes=False)
    frames = [fmt.read_events(path / seg["files"]["events"]["name"], where, columns=columns,
                              filters=filters) for seg in manifest["segments"]]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


# -- writing ---------------------------------------------------------------------------------
def _write_parquet(path: Path, df: pd.DataFrame, durable: bool) -> dict[str, Any]:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    buf = sink.getvalue().to_pybytes()
    with open(path, "wb") as f:
        f.write(buf)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    return {"sha256": hashlib.sha256(buf).hexdigest(), "bytes": len(buf)}


class StreamWriter:
    """Writes one streamed run into a store: the :class:`~hooklab.recording.watch.SegmentSink`
    that :func:`hooklab.watch` gives its watcher.

    Args:
        store: the :class:`~hooklab.store.runs.TraceStore`.
        run_id: the new run's id (must be free).
        author, notes, tags, by: as in :meth:`TraceStore.save` (with ``by``, a signed-in
            member, the author is ``by.label`` and the manifest records ``author_identity``).
    """

    def __init__(self, store: TraceStore, run_id: str, *, author: str | None = None,
                 notes: str = "", tags: list[str] | None = None,
                 versions: dict[str, str] | None = None, by: Identity | None = None) -> None:
        fmt.check_run_id(run_id)
        author = saved_author(author, by)
        if not isinstance(author, str) or not isinstance(notes, str):
            raise StoreError("author and notes must be strings")
        self.store = store
        self.run_id = run_id
        self.path = store.root / run_id
        self.where = f"run {run_id}"
        self._manifest: dict[str, Any] = {
            "format": fmt.FORMAT_NAME, "format_version": WATCH_FORMAT_VERSION,
            "kind": WATCH_KIND, "run_id": run_id, "created": fmt.iso(fmt.utc_now()),
            "author": author, "notes": notes, "tags": list(tags or []), "error": "",
            "status": "live", "meta": {}, "n_events": 0, "n_tensors": 0, "steps_done": 0,
            "writer": {"pid": os.getpid(), "host": _HOSTNAME, "heartbeat": time.time()},
            "segments": [], "versions": dict(versions or {}),
        }
        if by is not None:
            self._manifest["author_identity"] = by.to_dict()

    @property
    def manifest(self) -> dict[str, Any]:
        """The last manifest committed."""
        return self._manifest

    def open(self, meta: dict[str, Any]) -> None:
        """Create the run (a live manifest, no segment) with one atomic rename."""
        self._manifest["meta"] = fmt.jsonable(meta)
        if self.store.is_taken(self.run_id):
            raise StoreError(f"run id {self.run_id!r} is already used in {self.store.root}")
        tmp = self.store.make_temp_dir()
        try:
            fmt.write_manifest(tmp / fmt.MANIFEST, self._manifest, self.store.durable)
            self.store.commit_dir(tmp, self.run_id)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot create run {self.run_id} in {self.store.root}: {exc}"
                             ) from exc
        log.info("watch run %s is live in %s", self.run_id, self.store.root)

    def _commit_manifest(self, manifest: dict[str, Any]) -> None:
        manifest["writer"] = {**manifest["writer"], "heartbeat": time.time()}
        tmp = self.path / f".manifest-{uuid.uuid4().hex[:12]}.tmp"
        try:
            fmt.write_manifest(tmp, manifest, self.store.durable)
            os.replace(tmp, self.path / fmt.MANIFEST)
        finally:
            if tmp.exists():
                tmp.unlink()
        if self.store.durable:
            fmt.fsync_dir(self.path)
        self._manifest = manifest

    def write_segment(self, segment: Segment) -> None:
        """Write the segment's files, fsync them, then commit a manifest naming them."""
        if not self.path.is_dir():
            raise StoreError(f"run {self.run_id} is gone from {self.store.root} (deleted?)")
        index = len(self._manifest["segments"])
        durable = self.store.durable
        files: dict[str, Any] = {}
        name = seg_file(index, "events")
        files["events"] = {"name": name, **fmt.write_events(self.path / name, segment.events,
                                                            durable)}
        name = seg_file(index, "scalars")
        files["scalars"] = {"name": name, **_write_parquet(self.path / name, segment.scalars,
                                                           durable)}
        if segment.tensors:
            name = seg_file(index, "tensors")
            files["tensors"] = {"name": name, **fmt.write_tensors(self.path / name,
                                                                 segment.tensors, durable)}
        entry = {"index": index, "steps": [int(s) for s in segment.steps],
                 "n_events": len(segment.events), "n_tensors": len(segment.tensors),
                 "n_scalars": len(segment.scalars), "files": files,
                 "committed": fmt.iso(fmt.utc_now())}
        m = dict(self._manifest)
        m["segments"] = [*m["segments"], entry]
        m["n_events"] = m["n_events"] + entry["n_events"]
        m["n_tensors"] = m["n_tensors"] + entry["n_tensors"]
        m["steps_done"] = int(segment.steps_done)
        self._commit_manifest(m)
        log.debug("run %s: committed segment %d (%d steps)", self.run_id, index,
                  len(segment.steps))

    def heartbeat(self, steps_done: int) -> None:
        """Rewrite the manifest with a fresh heartbeat (no new segment)."""
        self._commit_manifest({**self._manifest, "steps_done": int(steps_done)})

    def close(self, status: str, error: str, steps_done: int) -> None:
        """Mark the run ``finished`` or ``failed`` (with the error text)."""
        if status not in STATUSES[1:]:
            raise ValueError(f"close status must be finished or failed, got {status!r}")
        self._commit_manifest({**self._manifest, "status": status, "error": error,
                               "steps_done": int(max(steps_done,
                                                     self._manifest["steps_done"])),
                               "ended": fmt.iso(fmt.utc_now())})
        log.info("watch run %s %s (%d segments)", self.run_id, status,
                 len(self._manifest["segments"]))
