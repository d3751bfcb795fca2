"""Export a stored run to one zip file and import such a zip, validated.

An exported run is a zip holding exactly ``manifest.json``, ``events.parquet`` and
``tensors.safetensors`` at its top level. Import never extracts by member name (no
``extractall``): it reads the three expected members into a temporary directory of the store
under fixed names, so a crafted zip cannot write outside the store ("zip slip"), and checks
sizes, the manifest's format version and the sha256 of both data files before committing the
run with one ``os.rename``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Protocol

from hooklab.core.errors import CorruptRunError, StoreError
from hooklab.store import format as fmt


class RunSink(Protocol):
    """What an import needs of a store (:class:`hooklab.store.runs.TraceStore` is one)."""

    root: Path
    max_import_bytes: int

    def make_temp_dir(self) -> Path: ...

    def is_taken(self, run_id: str) -> bool: ...

    def commit_dir(self, tmp: Path, run_id: str) -> None: ...

log = logging.getLogger(__name__)
_CHUNK = 1 << 22


def export_run(src: Path, run_id: str, path: str | os.PathLike[str] | None) -> Path:
    """Zip the run directory ``src``; written to a temporary name and renamed into place."""
    dest = Path(path) if path is not None else Path.cwd() / f"{run_id}.zip"
    if dest.is_dir():
        dest = dest / f"{run_id}.zip"
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            zf.write(src / fmt.MANIFEST, fmt.MANIFEST, compress_type=zipfile.ZIP_DEFLATED)
            # Parquet is compressed already and float payloads barely compress: store as is.
            zf.write(src / fmt.EVENTS, fmt.EVENTS, compress_type=zipfile.ZIP_STORED)
            zf.write(src / fmt.TENSORS, fmt.TENSORS, compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, dest)
    except OSError as exc:
        raise StoreError(f"cannot export run {run_id} to {dest}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _unsafe_name(name: str) -> bool:
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return True
    p = PurePosixPath(name)
    return ".." in p.parts or (len(name) > 1 and name[1] == ":")


def _check_members(zf: zipfile.ZipFile, where: str, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    unsafe = [n for n in names if _unsafe_name(n)]
    if unsafe:
        raise CorruptRunError(f"{where}: refused, member name(s) {unsafe[:3]!r} would write "
                              "outside the target folder (path traversal / zip slip)")
    if sorted(names) != sorted(fmt.RUN_FILES):
        raise CorruptRunError(f"{where}: an exported run holds exactly {list(fmt.RUN_FILES)}, "
                              f"this zip holds {names[:10]!r}")
    by_name = {i.filename: i for i in infos}
    for info in infos:
        if info.flag_bits & 0x1:
            raise CorruptRunError(f"{where}: {info.filename} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CorruptRunError(f"{where}: {info.filename} uses an unsupported compression")
    if by_name[fmt.MANIFEST].file_size > fmt.MAX_MANIFEST_BYTES:
        raise CorruptRunError(
            f"{where}: manifest.json is larger than {fmt.MAX_MANIFEST_BYTES} bytes")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise CorruptRunError(f"{where}: {total} bytes uncompressed exceeds the import limit "
                              f"of {max_bytes} bytes")
    return by_name


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, expected: dict,
                 where: str) -> None:
    """Stream one member to ``dest`` and check its size and sha256 against the manifest."""
    h = hashlib.sha256()
    n = 0
    limit = expected["bytes"]
    with zf.open(info) as src, open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            n += len(chunk)
            if n > limit:
                raise CorruptRunError(f"{where}: {info.filename} is larger than its manifest says")
            h.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if n != limit or h.hexdigest() != expected["sha256"]:
        raise CorruptRunError(f"{where}: {info.filename} does not match the sha256/size in "
                              "manifest.json (tampered or damaged)")


def _stamp_importer(manifest: dict, imported_by: dict[str, str] | None) -> None:
    """Record who imported the run (and when), dropping whatever the zip claimed about it."""
    for key in ("imported_by", "imported_at"):
        manifest.pop(key, None)
    if imported_by is not None:
        manifest["imported_by"] = dict(imported_by)
        manifest["imported_at"] = fmt.iso(fmt.utc_now())


def import_run(store: RunSink, path: str | os.PathLike[str],
               imported_by: dict[str, str] | None = None) -> str:
    """Validate the zip at ``path`` and add its run to ``store``; see TraceStore.import_.

    ``imported_by`` (an identity as a dict) is written to the manifest with ``imported_at``,
    replacing any such fields the zip carried (they are the importer's to state, not the
    zip's)."""
    path = Path(path)
    where = f"import of {path.name}"
    if not path.is_file():
        raise StoreError(f"cannot import {path}: no such file")
    tmp: Path | None = None
    try:
        with zipfile.ZipFile(path) as zf:
            members = _check_members(zf, where, store.max_import_bytes)
            manifest = fmt.parse_manifest(zf.read(members[fmt.MANIFEST]), where)
            original = manifest["run_id"]
            for name in fmt.DATA_FILES:  # declared sizes first: nothing written on a mismatch
                if members[name].file_size != manifest["files"][name]["bytes"]:
                    raise CorruptRunError(f"{where}: {name} is {members[name].file_size} bytes, "
                                          "manifest.json says otherwise (tampered or damaged)")
            need = sum(members[n].file_size for n in fmt.DATA_FILES)
            if shutil.disk_usage(store.root).free < need + 64 * 2**20:
                raise StoreError(f"{where}: not enough free space in {store.root} for "
                                 f"{need / 2**20:.0f} MiB")
            tmp = store.make_temp_dir()
            for name in fmt.DATA_FILES:
                _copy_member(zf, members[name], tmp / name, manifest["files"][name], where)
        rid = original
        for _attempt in range(5):
            if not store.is_taken(rid):
                break
            rid = fmt.new_run_id()
        if rid != original:
            manifest["run_id"] = rid
            manifest["imported_from"] = original
            log.info("run id %s is taken here; imported as %s", original, rid)
        _stamp_importer(manifest, imported_by)
        fmt.write_manifest(tmp / fmt.MANIFEST, manifest, durable=True)
        trace = fmt.open_run(tmp, where, verify=False, manifest=manifest)  # schema, keys
        del trace
        try:
            store.commit_dir(tmp, rid)
        except OSError as exc:
            raise StoreError(f"{where}: cannot add run {rid} to {store.root}: {exc}") from exc
        tmp = None
        return rid
    except zipfile.BadZipFile as exc:
        raise CorruptRunError(f"{where}: not a valid zip file ({exc})") from exc
    except (CorruptRunError, StoreError):
        raise
    except (OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CorruptRunError(f"{where}: cannot read the zip ({exc})") from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
