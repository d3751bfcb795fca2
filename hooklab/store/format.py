"""The on-disk format of one stored run (used by :mod:`hooklab.store.runs` and :mod:`hooklab.store.archive`).

A run is a directory (or a zip holding exactly the same three files)::

    manifest.json         who, when, what (trace.meta), versions, sha256 + size of the two others
    events.parquet        trace.events, one row per hook firing (hooklab.core.trace.EVENT_COLUMNS)
    tensors.safetensors   the stored payloads, keyed by the events' ``key`` column

Nothing here executes code from a file: JSON, Parquet and safetensors only, never pickle.
Every check that fails raises :class:`~hooklab.core.errors.CorruptRunError` naming the run and the
reason.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import struct
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import _TYPES as _ST_TYPES

from hooklab.core.errors import CorruptRunError, StoreError
from hooklab.core.trace import Trace, normalise_events

log = logging.getLogger(__name__)

FORMAT_NAME = "hooklab-run"
#: Version written by this hooklab; :data:`SUPPORTED_VERSIONS` are the ones it can read.
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"
EVENTS = "events.parquet"
TENSORS = "tensors.safetensors"
RUN_FILES = (MANIFEST, EVENTS, TENSORS)
DATA_FILES = (EVENTS, TENSORS)
#: A manifest larger than this is refused (it is metadata; payloads live in the other files).
MAX_MANIFEST_BYTES = 16 * 2**20

# Letters, digits, "_", "." and "-", starting with a letter or digit, at most 100 characters:
# no separator, no "..", no NUL, no leading dot (reserved for .tmp-* and .trash), never absolute.
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 22
#: torch dtype -> safetensors dtype code, for every dtype safetensors can read back into torch.
_ST_DTYPES: dict[torch.dtype, str] = {v: k for k, v in _ST_TYPES.items() if v is not None}
if sys.byteorder != "little":  # pragma: no cover - the writer emits native byte order
    raise ImportError("hooklab's trace store needs a little-endian machine")


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def new_run_id(now: _dt.datetime | None = None) -> str:
    """A sortable, practically unique id ``20261126-101500-1a2b3c4d``: UTC time + 32 random bits."""
    now = now or utc_now()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is a safe run id, else raise :class:`StoreError`.

    A run id is 1-100 characters from ``[A-Za-z0-9_.-]`` starting with a letter or digit, so it
    can never name a path outside the store (``../x``, ``/etc``, ``a/b``, NUL bytes are refused).
    """
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise StoreError(
            f"invalid run id {run_id!r}: use 1-100 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit (no path separators)")
    return run_id


def iso(t: _dt.datetime) -> str:
    return t.isoformat(timespec="microseconds")


# -- JSON ----------------------------------------------------------------------------------------
def jsonable(obj: Any, _path: str = "meta") -> Any:
    """A JSON-ready copy of ``obj``: tuples/sets become lists, tensors' dtype/device/shape become
    strings/lists, numpy scalars Python numbers, edits their spec; anything else its ``str``
    (logged).
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, f"{_path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, torch.Size)):
        return [jsonable(v, f"{_path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted((jsonable(v, _path) for v in obj), key=repr)
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    if hasattr(obj, "spec") and callable(obj.spec):  # hooklab.core.edits.Edit, EditSpec-like
        return jsonable(obj.spec(), _path)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return jsonable(obj.item(), _path)  # numpy / torch scalars
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return jsonable(obj.tolist(), _path)
    log.warning("%s: %s is not JSON data; storing its str()", _path, type(obj).__name__)
    return str(obj)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _req(m: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in m:
        raise CorruptRunError(f"{where}: manifest lacks {key!r}")
    value = m[key]
    if not isinstance(value, types) or (isinstance(value, bool) and types is int):
        raise CorruptRunError(f"{where}: manifest field {key!r} has the wrong type "
                              f"({type(value).__name__})")
    return value


def parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """Parse and validate manifest bytes; ``where`` names the run in error messages."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise CorruptRunError(f"{where}: manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        m = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRunError(f"{where}: manifest.json is not valid JSON ({exc})") from exc
    return validate_manifest(m, where)


def validate_manifest(m: Any, where: str) -> dict[str, Any]:
    """Check a manifest's structure and version; return it unchanged."""
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise CorruptRunError(f"{where}: not a hooklab run manifest")
    version = m.get("format_version")
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise CorruptRunError(
            f"{where}: unknown format version {version!r} (this hooklab reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}; upgrade hooklab to open it)")
    rid = _req(m, "run_id", str, where)
    if not _RUN_ID_RE.fullmatch(rid):
        raise CorruptRunError(f"{where}: manifest run id {rid!r} is not a valid run id")
    for key in ("created", "author", "notes"):
        _req(m, key, str, where)
    tags = _req(m, "tags", list, where)
    if not all(isinstance(t, str) for t in tags):
        raise CorruptRunError(f"{where}: manifest tags must be strings")
    _req(m, "meta", dict, where)
    for key in ("n_events", "n_tensors"):
        if _req(m, key, int, where) < 0:
            raise CorruptRunError(f"{where}: manifest {key} is negative")
    files = _req(m, "files", dict, where)
    if set(files) != set(DATA_FILES):
        raise CorruptRunError(f"{where}: manifest lists files {sorted(files)}, "
                              f"expected {list(DATA_FILES)}")
    for name, info in files.items():
        if (not isinstance(info, dict) or not isinstance(info.get("sha256"), str)
                or not _SHA_RE.fullmatch(info["sha256"])
                or not isinstance(info.get("bytes"), int) or isinstance(info["bytes"], bool)
                or info["bytes"] < 0):
            raise CorruptRunError(f"{where}: manifest entry for {name} needs sha256 and bytes")
    return m


# -- files ---------------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a directory entry change (create/rename) durable; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def regular_file(path: Path, where: str) -> os.stat_result:
    """``lstat`` of a run file; a missing file, a symlink or a non-file is a CorruptRunError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CorruptRunError(f"{where}: {path.name} is missing") from None
    except OSError as exc:
        raise CorruptRunError(f"{where}: cannot read {path.name} ({exc})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise CorruptRunError(f"{where}: {path.name} is not a regular file")
    return st


def write_manifest(path: Path, manifest: dict[str, Any], durable: bool) -> None:
    """Write ``manifest`` to ``path`` (a new file)."""
    with open(path, "wb") as f:
        f.write(manifest_bytes(manifest))
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _writeback_fn() -> Any:
    """Linux ``sync_file_range`` (start writing a file range to disk, do not wait), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE_WRITE = 2
_start_writeback = _writeback_fn()
#: Bytes written between two writeback starts of a durable write.
WRITEBACK_CHUNK = 16 * 2**20


def _pieces(head: bytes, views: list[memoryview]) -> Iterator[memoryview]:
    """``head`` then ``views`` as byte memoryviews of at most :data:`WRITEBACK_CHUNK` bytes."""
    for v in [memoryview(head), *views]:
        v = v.cast("B") if v.format != "B" or v.ndim != 1 else v
        for i in range(0, v.nbytes, WRITEBACK_CHUNK):
            yield v[i:i + WRITEBACK_CHUNK]


def _write_pipelined(path: Path, head: bytes, views: list[memoryview], durable: bool) -> str:
    """Write ``head`` then ``views`` to ``path`` while a thread hashes the same memory.

    hashlib and file writes both release the GIL, so hashing overlaps the write and the fsync
    instead of re-reading the file afterwards. A durable write also asks the kernel to start
    writing each 16 MiB piece to disk as soon as it is in the page cache (Linux
    ``sync_file_range``), so the disk works while the rest is still being copied and the final
    ``fsync`` waits only for the tail, instead of the kernel starting only at the fsync.
    Returns the sha256 hex digest of the file.
    """
    result: list[str] = []

    def digest() -> None:
        h = hashlib.sha256(head)
        for v in views:
            h.update(v)
        result.append(h.hexdigest())

    worker = threading.Thread(target=digest, name="hooklab-sha256", daemon=True)
    worker.start()
    try:
        with open(path, "wb", buffering=0) as f:
            fd, pos, started = f.fileno(), 0, 0
            early = durable and _start_writeback is not None
            for piece in _pieces(head, views):
                while piece:  # a raw write may be partial
                    n = f.write(piece) or 0
                    piece = piece[n:]
                    pos += n
                if early and pos - started >= WRITEBACK_CHUNK:
                    # a hint to the kernel: its result does not matter (the fsync below does)
                    _start_writeback(fd, started, pos - started, _SYNC_FILE_RANGE_WRITE)
                    started = pos
            if durable:
                os.fsync(fd)
    finally:
        worker.join()
    return result[0]


def write_events(path: Path, events: pd.DataFrame, durable: bool) -> dict[str, Any]:
    """Write the events table as Parquet; return ``{"sha256", "bytes"}``."""
    table = pa.Table.from_pandas(normalise_events(events), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    buf = memoryview(sink.getvalue())
    return {"sha256": _write_pipelined(path, b"", [buf], durable), "bytes": buf.nbytes}


def _byte_view(t: torch.Tensor) -> memoryview:
    """The bytes of contiguous CPU tensor ``t`` as a writable memoryview, without a copy."""
    # numpy's stubs declare ndarray.__buffer__ only for Python >= 3.12; the buffer protocol
    # itself is there on 3.11 too.
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]


def _prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, CPU, contiguous, dense tensors (copies only where needed)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if not isinstance(key, str) or not key or key == "__metadata__":
            raise StoreError(f"tensor keys must be non-empty strings (not __metadata__), "
                             f"got {key!r}")
        if not isinstance(t, torch.Tensor):
            raise StoreError(f"tensor {key!r} is a {type(t).__name__}, not a torch.Tensor")
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype not in _ST_DTYPES:
            raise StoreError(f"cannot store tensor {key!r} of dtype {t.dtype}; safetensors "
                             f"stores {', '.join(sorted(str(d) for d in _ST_DTYPES))}")
        out[key] = t.resolve_conj().resolve_neg().contiguous()
    return out


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], durable: bool
                  ) -> dict[str, Any]:
    """Write ``tensors`` in the safetensors format; return ``{"sha256", "bytes"}``.

    The file is what ``safetensors.torch.save_file`` writes (8-byte little-endian header
    length, JSON header padded to 8 bytes, then the payloads ordered by decreasing element
    size so each is aligned), but written straight from the tensors' memory with no
    intermediate copy, hashed while it is written.
    """
    prepared = _prepare_tensors(tensors)
    order = sorted(prepared, key=lambda k: -prepared[k].element_size())  # stable
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    views: list[memoryview] = []
    offset = 0
    for key in order:
        t = prepared[key]
        n = t.numel() * t.element_size()
        header[key] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + n]}
        offset += n
        if n:
            views.append(_byte_view(t))
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    head = struct.pack("<Q", len(hb)) + hb
    return {"sha256": _write_pipelined(path, head, views, durable), "bytes": len(head) + offset}


def write_run(directory: Path, trace: Trace, info: dict[str, Any], durable: bool = True
              ) -> dict[str, Any]:
    """Write the three run files of ``trace`` into ``directory``; return the manifest.

    ``info`` holds the manifest's run fields (run_id, created, author, notes, tags, versions).
    """
    events = trace.events
    tensors = trace.tensors()
    files = {EVENTS: write_events(directory / EVENTS, events, durable),
             TENSORS: write_tensors(directory / TENSORS, tensors, durable)}
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, **info,
        "meta": jsonable(trace.meta), "n_events": len(events), "n_tensors": len(tensors),
        "files": files,
    }
    write_manifest(directory / MANIFEST, manifest, durable)
    return manifest


# -- reading -------------------------------------------------------------------------------------
def read_manifest(directory: Path, where: str) -> dict[str, Any]:
    path = directory / MANIFEST
    st = regular_file(path, where)
    if st.st_size > MAX_MANIFEST_BYTES:
        raise CorruptRunError(f"{where}: manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptRunError(f"{where}: cannot read manifest.json ({exc})") from exc
    return parse_manifest(raw, where)


def check_files(directory: Path, manifest: dict[str, Any], where: str, *, hashes: bool,
                names: tuple[str, ...] = DATA_FILES) -> None:
    """Each data file is a regular file of the manifest's size (and sha256, if ``hashes``)."""
    for name in names:
        expected = manifest["files"][name]
        st = regular_file(directory / name, where)
        if st.st_size != expected["bytes"]:
            raise CorruptRunError(f"{where}: {name} has {st.st_size} bytes, the manifest says "
                                  f"{expected['bytes']} (truncated or modified)")
        if hashes and sha256_file(directory / name) != expected["sha256"]:
            raise CorruptRunError(f"{where}: {name} does not match the sha256 in its manifest "
                                  "(modified or damaged)")


def quick_check(directory: Path, manifest: dict[str, Any], where: str) -> None:
    """Cheap integrity check for listings: file sizes, the Parquet footer's row count and the
    safetensors header's tensor count and extent. Reads a few KB per run, never the payloads."""
    check_files(directory, manifest, where, hashes=False)
    try:
        rows = pq.read_metadata(directory / EVENTS).num_rows
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise CorruptRunError(f"{where}: events.parquet is unreadable ({exc})") from exc
    if rows != manifest["n_events"]:
        raise CorruptRunError(f"{where}: events.parquet has {rows} rows, the manifest says "
                              f"{manifest['n_events']}")
    _, entries = read_tensor_header(directory / TENSORS, where)
    if len(entries) != manifest["n_tensors"]:
        raise CorruptRunError(f"{where}: tensors.safetensors holds {len(entries)} tensors, the "
                              f"manifest says {manifest['n_tensors']}")


_Entry = tuple[torch.dtype, tuple[int, ...], int, int]


def read_tensor_header(path: Path, where: str) -> tuple[int, dict[str, _Entry]]:
    """Parse and check a safetensors header: ``(data_start, {key: (dtype, shape, begin, end)})``.

    Offsets are relative to ``data_start``; every entry must lie inside the file with exactly
    ``numel * itemsize`` bytes, and the entries must tile the data section without gaps.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size - 8, 100 * 2**20):
                raise ValueError("header length beyond the file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        entries: dict[str, _Entry] = {}
        for key, v in header.items():
            if key == "__metadata__":
                continue
            dtype = _ST_TYPES[v["dtype"]]
            if dtype is None:  # a safetensors dtype this torch build lacks
                raise ValueError(f"dtype {v['dtype']} of {key!r} is not in this torch")
            shape = tuple(int(d) for d in v["shape"])
            begin, end = (int(o) for o in v["data_offsets"])
            numel = 1
            for d in shape:
                if d < 0:
                    raise ValueError(f"negative dimension in {key!r}")
                numel *= d
            if end - begin != numel * torch.empty((), dtype=dtype).element_size() or begin < 0:
                raise ValueError(f"offsets of {key!r} do not match its shape")
            entries[key] = (dtype, shape, begin, end)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise CorruptRunError(f"{where}: tensors.safetensors has a bad header ({exc})") from exc
    spans = sorted((b, e) for _, _, b, e in entries.values())
    pos = 0
    for b, e in spans:
        if b != pos:
            raise CorruptRunError(f"{where}: tensors.safetensors has overlapping or missing data")
        pos = e
    if 8 + n + pos != size:
        raise CorruptRunError(f"{where}: tensors.safetensors is {size} bytes, its header "
                              f"describes {8 + n + pos}")
    return 8 + n, entries


def read_events(path: Path, where: str, columns: list[str] | None = None,
                filters: list[tuple[str, str, Any]] | None = None) -> pd.DataFrame:
    """Read an events file; a full read (no ``columns``) is normalised and checked."""
    try:
        table = pq.read_table(path, columns=columns, filters=filters or None)
        df = table.to_pandas()
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise CorruptRunError(f"{where}: events.parquet is unreadable ({exc})") from exc
    if columns is None:
        try:
            df = normalise_events(df)
        except (ValueError, TypeError) as exc:
            raise CorruptRunError(f"{where}: events.parquet has a bad schema ({exc})") from exc
    return df


class LazyTensors(Mapping[str, torch.Tensor]):
    """Read-only mapping over a safetensors file; each access reads one tensor from disk.

    The header is parsed once (and checked by safetensors' own ``safe_open`` as well); an
    access reads the tensor's bytes straight into a new tensor, so a returned tensor is the
    caller's to change: a later read and the file are unaffected.
    """

    def __init__(self, path: Path, where: str) -> None:
        self._path = path
        self._where = where
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
        except Exception as exc:  # the Rust reader raises its own error types
            raise CorruptRunError(f"{where}: tensors.safetensors is unreadable ({exc})") from exc
        self._data_start, self._entries = read_tensor_header(path, where)
        if sorted(keys) != sorted(self._entries):
            raise CorruptRunError(f"{where}: tensors.safetensors header is ambiguous")
        self._keys = keys

    def __getitem__(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[key]  # KeyError for an unknown key
        t = torch.empty(shape, dtype=dtype)
        if end > begin:
            buf = _byte_view(t)
            try:
                with open(self._path, "rb") as f:
                    f.seek(self._data_start + begin)
                    got = f.readinto(buf)
            except FileNotFoundError:
                raise StoreError(f"{self._where} was moved or deleted after it was loaded; "
                                 "load it again") from None
            except OSError as exc:
                raise CorruptRunError(f"{self._where}: cannot read tensor {key!r} ({exc})"
                                      ) from exc
            if got != end - begin:
                raise CorruptRunError(f"{self._where}: tensor {key!r} is truncated")
        return t

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"LazyTensors({len(self)} tensors in {self._path})"


def open_run(directory: Path, where: str, *, verify: bool = True,
             manifest: dict[str, Any] | None = None) -> Trace:
    """Check a run directory and build its :class:`Trace` (tensors lazy).

    ``verify`` hashes both data files against the manifest (about 1 s per GB).
    """
    manifest = manifest if manifest is not None else read_manifest(directory, where)
    check_files(directory, manifest, where, hashes=verify)
    events = read_events(directory / EVENTS, where)
    if len(events) != manifest["n_events"]:
        raise CorruptRunError(f"{where}: events.parquet has {len(events)} rows, the manifest "
                              f"says {manifest['n_events']}")
    tensors = LazyTensors(directory / TENSORS, where)
    if len(tensors) != manifest["n_tensors"]:
        raise CorruptRunError(f"{where}: tensors.safetensors holds {len(tensors)} tensors, the "
                              f"manifest says {manifest['n_tensors']}")
    keys = set(events["key"]) - {""}
    missing = sorted(k for k in keys if k not in tensors)
    if missing:
        raise CorruptRunError(f"{where}: events refer to tensors that are not stored: "
                              f"{missing[:5]}")
    return Trace(events=events, tensors=tensors, meta=manifest["meta"])


__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "SUPPORTED_VERSIONS", "MANIFEST", "EVENTS", "TENSORS",
    "RUN_FILES", "DATA_FILES", "new_run_id", "check_run_id", "jsonable",
    "parse_manifest", "validate_manifest", "write_run", "open_run", "read_events",
    "LazyTensors",
]
