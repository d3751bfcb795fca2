"""TraceStore: one immutable directory per recorded run, committed atomically.

Layout of a store root (default ``./hooklab-runs``, or ``$HOOKLAB_STORE``)::

    <root>/<run_id>/manifest.json, events.parquet, tensors.safetensors   a run
    <root>/.trash/<run_id>/                                               a deleted run
    <root>/.tmp-<host>-<pid>-<random>/                                    a save in progress

A save writes the three files into a temporary directory inside the root, fsyncs them and
commits with one ``os.rename`` to ``<root>/<run_id>``: a run is either wholly visible or not at
all, and concurrent writers (processes, threads, machines sharing a folder) never collide.
Temporary directories left by a killed writer are removed the next time a store is opened.

Runs are immutable with one documented exception: :meth:`TraceStore.update` replaces
``manifest.json`` (notes and tags only) by writing a new file and ``os.replace``-ing it.

Who may change a run is the store's :class:`~hooklab.store.access.LabPolicy` (open by default:
everyone may do everything); every change (save, notes/tags, trash, restore, purge, import)
appends one chained line to ``<root>/.audit/log.jsonl`` (:mod:`hooklab.store.audit`), read back
with :meth:`TraceStore.history` and checked with :meth:`TraceStore.verify_audit`.

Example:
    >>> store = hooklab.TraceStore("runs")
    >>> run_id = store.save(rec.trace, author="ana", notes="halved conv2 grads", tags=["halve"])
    >>> store.list()[["run_id", "model", "edits", "status"]]
    >>> store.query(layer="conv1", role="grad_output", column="norm")
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow
import safetensors
import torch

from hooklab.core.errors import CorruptRunError, StoreError
from hooklab.core.trace import Trace
from hooklab.core.version import __version__
from hooklab.store import format as fmt
from hooklab.store import stream
from hooklab.store.access import Decision, Identity, LabPolicy, saved_author
from hooklab.store.archive import export_run, import_run
from hooklab.store.audit import AuditLog, AuditReport
from hooklab.store.listing import (
    LIST_COLUMNS,
    normalise_tags,
    query_runs,
    read_run_manifest,
    runs_table,
    summarise_edits,
)

__all__ = ["TraceStore", "default_root", "DEFAULT_ROOT", "ENV_VAR", "LIST_COLUMNS",
           "normalise_tags", "summarise_edits"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = "hooklab-runs"
ENV_VAR = "HOOKLAB_STORE"
TRASH = ".trash"
_TMP_PREFIX = ".tmp-"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_pid_alive = stream.pid_alive


def default_root() -> Path:
    """``$HOOKLAB_STORE`` if set, else ``./hooklab-runs``."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def _versions() -> dict[str, str]:
    return {"hooklab": __version__, "torch": torch.__version__,
            "safetensors": safetensors.__version__, "pyarrow": pyarrow.__version__,
            "pandas": pd.__version__, "python": sys.version.split()[0]}


class TraceStore:
    """A folder of recorded runs.

    Args:
        root: the store folder; ``None`` uses ``$HOOKLAB_STORE`` or ``./hooklab-runs``. Created
            if missing.
        durable: fsync files and directories on save (survives power loss, not only crashes).
        stale_after: seconds after which a temporary directory is removed even if its writer
            cannot be checked (another machine sharing the folder). Directories of writers on
            this machine whose process has died are removed at once.
        max_import_bytes: largest total size accepted by :meth:`import_`.
        policy: who may change which run (:class:`~hooklab.store.access.LabPolicy`); default
            open: everyone may do everything (the local default). Every changing method takes
            ``by=`` (an :class:`~hooklab.store.access.Identity`; default the OS user).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, durable: bool = True,
                 stale_after: float = 3600.0, max_import_bytes: int = 8 * 2**30,
                 policy: LabPolicy | None = None) -> None:
        root_path = Path(root) if root is not None else default_root()
        self.durable = durable
        self.policy = policy if policy is not None else LabPolicy.open()
        self.stale_after = float(stale_after)
        self.max_import_bytes = int(max_import_bytes)
        try:
            root_path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StoreError(f"store root {root_path} exists and is not a folder") from None
        except OSError as exc:
            raise StoreError(f"cannot create store root {root_path}: {exc}") from exc
        try:
            (root_path / TRASH).mkdir(exist_ok=True)
        except OSError:  # a read-only store can still be listed and read
            log.info("store %s is read-only", root_path)
        self.root = root_path.resolve()
        self.trash = self.root / TRASH
        self.audit = AuditLog(self.root, durable=durable)
        self.cleaned = self.clean_temp()

    def __repr__(self) -> str:
        return f"TraceStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------
    def _run_dir(self, run_id: str, *, trash: bool = False, must_exist: bool = True) -> Path:
        fmt.check_run_id(run_id)
        base = self.trash if trash else self.root
        path = base / run_id
        if path.parent != base:  # cannot happen with a valid id; belt and braces
            raise StoreError(f"run id {run_id!r} escapes the store")
        if must_exist:
            if path.is_symlink():
                raise CorruptRunError(f"run {run_id}: is a symbolic link; refused")
            if not path.is_dir():
                if not trash and (self.trash / run_id).is_dir():
                    raise StoreError(f"run {run_id} is in the trash; restore it first")
                raise StoreError(f"no run {run_id!r} in {base}")
        return path

    def exists(self, run_id: str) -> bool:
        """True if ``run_id`` names a run in the store (not in the trash)."""
        fmt.check_run_id(run_id)
        path = self.root / run_id
        return path.is_dir() and not path.is_symlink()

    def is_taken(self, run_id: str) -> bool:
        """True when ``run_id`` names a run here or in the trash."""
        return os.path.lexists(self.root / run_id) or os.path.lexists(self.trash / run_id)

    def make_temp_dir(self) -> Path:
        """A new temporary run directory inside the store (removed if its writer dies)."""
        path = self.root / f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except OSError as exc:
            raise StoreError(f"cannot write to store {self.root}: {exc}") from exc
        return path

    def clean_temp(self) -> list[str]:
        """Remove temporary directories of dead writers (or older than ``stale_after``).

        Returns the names removed. Called when the store is opened.
        """
        removed = []
        now = time.time()
        try:
            entries = list(os.scandir(self.root))
        except OSError as exc:
            raise StoreError(f"cannot read store root {self.root}: {exc}") from exc
        for entry in entries:
            if not entry.name.startswith(_TMP_PREFIX):
                continue
            parts = entry.name[len(_TMP_PREFIX):].split("-")
            dead = False
            if len(parts) == 3 and parts[0] == _HOST and parts[1].isdigit():
                dead = not _pid_alive(int(parts[1]))
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if dead or age > self.stale_after:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass
                if not os.path.lexists(entry.path):
                    removed.append(entry.name)
                    log.info("removed leftover temporary %s", entry.name)
        return removed

    def commit_dir(self, tmp: Path, run_id: str) -> None:
        """Commit the finished temporary directory ``tmp`` as run ``run_id`` (one rename)."""
        if self.durable:
            fmt.fsync_dir(tmp)
        if os.path.lexists(self.trash / run_id):
            raise FileExistsError(run_id)
        os.rename(tmp, self.root / run_id)  # atomic; fails if a non-empty run dir exists
        if self.durable:
            fmt.fsync_dir(self.root)

    # -- writing -------------------------------------------------------------------------------
    def save(self, trace: Trace, *, author: str | None = None, notes: str = "",
             tags: str | Iterable[str] | None = None, run_id: str | None = None,
             by: Identity | None = None) -> str:
        """Store ``trace`` as a new run and return its id.

        Args:
            trace: what a recording produced (events, tensors, meta).
            author: who made it (default: the login name).
            notes: free text.
            tags: list of labels, or a comma-separated string.
            run_id: an explicit id (see :func:`hooklab.store.format.check_run_id`); default a
                new sortable id ``YYYYMMDD-HHMMSS-xxxxxxxx`` (UTC). An id already used is an error.
            by: who saves (a signed-in member): then the author is ``by.label`` (``author`` is
                ignored) and the manifest records ``author_identity``, which the policy uses.

        Raises:
            StoreError: bad id, id taken, unwritable store, a tensor that cannot be stored.
        """
        if not isinstance(trace, Trace):
            raise StoreError(f"save() expects a hooklab Trace, got {type(trace).__name__}")
        explicit = run_id is not None
        if run_id is not None:
            fmt.check_run_id(run_id)
            if self.is_taken(run_id):
                raise StoreError(f"run id {run_id!r} is already used in {self.root}")
        author = saved_author(author, by)
        if not isinstance(author, str) or not isinstance(notes, str):
            raise StoreError("author and notes must be strings")
        created = fmt.utc_now()
        rid = run_id if run_id is not None else fmt.new_run_id(created)
        info = {"run_id": rid, "created": fmt.iso(created), "author": author, "notes": notes,
                "tags": normalise_tags(tags), "versions": _versions()}
        if by is not None:
            info["author_identity"] = by.to_dict()
        tmp = self.make_temp_dir()
        try:
            manifest = fmt.write_run(tmp, trace, info, self.durable)
            for attempt in range(5):
                try:
                    self.commit_dir(tmp, rid)
                    break
                except (FileExistsError, OSError) as exc:
                    if explicit or not self.is_taken(rid) or attempt == 4:
                        raise StoreError(f"cannot commit run {rid} in {self.root}: {exc}") from exc
                    rid = fmt.new_run_id()  # astronomically rare id collision: take another
                    manifest["run_id"] = rid
                    os.unlink(tmp / fmt.MANIFEST)
                    fmt.write_manifest(tmp / fmt.MANIFEST, manifest, self.durable)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, StoreError):
                raise StoreError(f"saving a run to {self.root} failed: {exc}") from exc
            raise
        log.info("saved run %s (%d events, %d tensors)", rid, manifest["n_events"],
                 manifest["n_tensors"])
        self.audit.append(by or Identity.local(), "save", rid,
                          after={"author": author, "notes": notes, "tags": info["tags"]})
        return rid

    # -- permissions and the audit log ---------------------------------------------------------
    def _manifest_any(self, run_id: str) -> dict[str, Any]:
        """The manifest of a run here or in the trash (``{"run_id": id}`` if unreadable)."""
        for trash in (False, True):
            path = (self.trash if trash else self.root) / fmt.check_run_id(run_id)
            if path.is_dir() and not path.is_symlink():
                try:
                    return self._manifest_at(path, run_id)
                except StoreError:
                    return {"run_id": run_id}
        self._run_dir(run_id)  # raises "no run ..."
        return {"run_id": run_id}  # pragma: no cover

    def decide(self, run_id: str, action: str, by: Identity | None = None) -> Decision:
        """May ``by`` (default the OS user) do ``action`` ("update", "trash", "restore",
        "purge") to ``run_id``? A :class:`~hooklab.store.access.Decision` with the reason."""
        return self.policy.decide(by or Identity.local(), action, self._manifest_any(run_id))

    def history(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The audit log's lines about ``run_id``, oldest first (who, time, action, before,
        after)."""
        fmt.check_run_id(run_id)
        return self.audit.history(run_id)

    def verify_audit(self) -> AuditReport:
        """Check the audit log's chain: every edited, removed or reordered line is reported."""
        return self.audit.verify()

    def update(self, run_id: str, *, notes: str | None = None,
               tags: str | Iterable[str] | None = None,
               by: Identity | None = None) -> dict[str, Any]:
        """Change a run's notes and/or tags: the one mutation a run allows.

        A new ``manifest.json`` is written beside the old one and swapped in with ``os.replace``,
        so readers see the old or the new manifest, never a mix. Data files are untouched (their
        hashes stay valid). Concurrent updates of one run: the last one wins.
        Returns the new manifest.

        Raises:
            PermissionDenied: ``by`` is neither the run's owner nor an admin (nothing changes).
        """
        who = by or Identity.local()
        with self.audit.locked():
            return self._update(run_id, notes, tags, who)

    def _update(self, run_id: str, notes: str | None, tags: str | Iterable[str] | None,
                who: Identity) -> dict[str, Any]:
        path = self._run_dir(run_id)
        manifest = read_run_manifest(path, run_id)
        self.policy.check(who, "update", manifest)
        before = {"notes": manifest["notes"], "tags": list(manifest["tags"])}
        if stream.is_watch(manifest) and stream.run_status(manifest) == "live":
            raise StoreError(f"run {run_id} is still being written (a live watch run); change "
                             "its notes and tags after the training ends")
        if notes is not None:
            if not isinstance(notes, str):
                raise StoreError("notes must be a string")
            manifest["notes"] = notes
        if tags is not None:
            manifest["tags"] = normalise_tags(tags)
        manifest["updated"] = fmt.iso(fmt.utc_now())
        tmp = path / f".manifest-{uuid.uuid4().hex[:12]}.tmp"
        try:
            fmt.write_manifest(tmp, manifest, self.durable)
            os.replace(tmp, path / fmt.MANIFEST)
        except OSError as exc:
            raise StoreError(f"cannot update run {run_id}: {exc}") from exc
        finally:
            if tmp.exists():
                tmp.unlink()
        if self.durable:
            fmt.fsync_dir(path)
        after = {"notes": manifest["notes"], "tags": manifest["tags"]}
        self.audit.append(who, "update", run_id, _locked=True,
                          before={k: v for k, v in before.items() if after[k] != v},
                          after={k: v for k, v in after.items() if before[k] != v})
        return manifest

    # -- reading -------------------------------------------------------------------------------
    def manifest(self, run_id: str) -> dict[str, Any]:
        """The validated manifest of a run."""
        return self._manifest_at(self._run_dir(run_id), run_id)

    @staticmethod
    def _manifest_at(path: Path, run_id: str) -> dict[str, Any]:
        return read_run_manifest(path, run_id)

    def load(self, run_id: str, *, verify: bool = True) -> Trace:
        """The stored :class:`Trace`; its tensors are read from disk on access.

        ``verify`` checks both files' sha256 against the manifest first (about 1 s per GB).
        Raises CorruptRunError naming the run and the problem.
        """
        path = self._run_dir(run_id)
        manifest = self._manifest_at(path, run_id)
        if stream.is_watch(manifest):  # every committed segment's events, one Trace
            return stream.load_trace(path, manifest, f"run {run_id}", verify=verify)
        return fmt.open_run(path, f"run {run_id}", verify=verify, manifest=manifest)

    def watch_run(self, run_id: str, *, columns: Sequence[str] | None = None,
                  verify: bool = False) -> stream.WatchRun:
        """A streamed run (written by :func:`hooklab.watch`) as committed so far; see
        :func:`hooklab.store.stream.open_watch`."""
        return stream.open_watch(self, run_id, columns=None if columns is None
                                 else builtins.list(columns), verify=verify)

    def events(self, run_id: str) -> pd.DataFrame:
        """The run's events table (checked against the manifest's sha256)."""
        path = self._run_dir(run_id)
        manifest = self._manifest_at(path, run_id)
        where = f"run {run_id}"
        if stream.is_watch(manifest):
            return stream.load_trace(path, manifest, where, verify=True).events
        fmt.check_files(path, manifest, where, hashes=True, names=(fmt.EVENTS,))
        return fmt.read_events(path / fmt.EVENTS, where)

    def verify(self, run_id: str) -> None:
        """Raise CorruptRunError if anything about the run is wrong; return if it is intact."""
        self.load(run_id, verify=True)

    def run_ids(self) -> list[str]:
        """Ids of every run directory (intact or not), sorted."""
        try:
            entries = list(os.scandir(self.root))
        except OSError as exc:
            raise StoreError(f"cannot read store {self.root}: {exc}") from exc
        return sorted(e.name for e in entries
                      if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                      and fmt._RUN_ID_RE.fullmatch(e.name))

    def list(self, *, author: str | None = None, tag: str | None = None,
             model: str | None = None) -> pd.DataFrame:
        """One row per run, newest first (columns :data:`LIST_COLUMNS`).

        A damaged run or one of an unknown format version is listed with status
        ``"corrupt: <reason>"``; listing never raises because of one run. Listing checks the
        manifest, file sizes and the two files' headers (a few KB per run); only
        :meth:`load` / :meth:`verify` hash the payloads. Filters keep rows
        whose author / model equals the value, or whose tags include ``tag``.
        """
        df = runs_table(self.root, self.run_ids())
        if author is not None:
            df = df[df["author"] == author]
        if model is not None:
            df = df[df["model"] == model]
        if tag is not None:
            df = df[df["tags"].map(lambda s: tag in s.split(","))]
        return df.reset_index(drop=True)

    def query(self, layer: str | Sequence[str] | None = None,
              role: str | Sequence[str] | None = None, column: str | Sequence[str] = "norm",
              kinds: str | Sequence[str] | None = None,
              run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Event rows across runs, with ``run_id`` and ``created`` columns (reads only the
        Parquet files), oldest run first, each run's rows in firing order.

        Example: every gradient norm of ``conv1`` over all runs::

            store.query(layer="conv1", role="grad_output", column="norm")

        Args:
            layer, role, kinds: keep rows whose layer / role / hook kind is this value or in
                this list (``None``: all).
            column: statistic column(s) to return besides the identifying ones.
            run_ids: runs to search (default: every run). Damaged runs are skipped with a
                logged warning.
        """
        ids = self.run_ids() if run_ids is None else [fmt.check_run_id(r) for r in run_ids]
        return query_runs(self.root, ids, layer=layer, role=role, column=column, kinds=kinds)

    # -- trash ---------------------------------------------------------------------------------
    def delete(self, run_id: str, *, by: Identity | None = None) -> None:
        """Move a run to the trash (``<root>/.trash``); :meth:`restore` brings it back.

        Raises PermissionDenied when ``by`` may not (nothing moves)."""
        who = by or Identity.local()
        with self.audit.locked():
            self._delete(run_id, who)
            self.audit.append(who, "trash", run_id, _locked=True)

    def _delete(self, run_id: str, who: Identity) -> None:
        path = self._run_dir(run_id)
        target = self.trash / run_id
        try:
            manifest = self._manifest_at(path, run_id)
        except StoreError:  # a damaged run can be deleted (by its owner or an admin)
            manifest = {"run_id": run_id}
        self.policy.check(who, "trash", manifest)
        if stream.is_watch(manifest) and stream.run_status(manifest) == "live":
            raise StoreError(f"run {run_id} is still being written (a live watch run of "
                             f"process {manifest['writer']['pid']}); stop the training first")
        if os.path.lexists(target):
            raise StoreError(f"the trash already holds a run {run_id}; purge it first")
        try:
            self.trash.mkdir(exist_ok=True)
            os.rename(path, target)
        except OSError as exc:
            raise StoreError(f"cannot delete run {run_id}: {exc}") from exc
        try:
            os.utime(target)  # the trash listing's "deleted" time
        except OSError:
            pass
        log.info("moved run %s to the trash", run_id)

    def restore(self, run_id: str, *, by: Identity | None = None) -> None:
        """Bring a deleted run back from the trash (PermissionDenied when ``by`` may not)."""
        who = by or Identity.local()
        with self.audit.locked():
            path = self._run_dir(run_id, trash=True)
            self.policy.check(who, "restore", self._manifest_any(run_id))
            self._restore(run_id, path)
            self.audit.append(who, "restore", run_id, _locked=True)

    def _restore(self, run_id: str, path: Path) -> None:
        if os.path.lexists(self.root / run_id):
            raise StoreError(f"cannot restore {run_id}: a run with that id exists")
        try:
            os.rename(path, self.root / run_id)
        except OSError as exc:
            raise StoreError(f"cannot restore run {run_id}: {exc}") from exc

    # builtins.list: in this class body `list` is the method TraceStore.list
    def _trash_entries(self) -> builtins.list[os.DirEntry[str]]:
        try:
            return list(os.scandir(self.trash))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read the trash {self.trash}: {exc}") from exc

    def trash_list(self) -> pd.DataFrame:
        """The runs in the trash with a ``deleted`` column (UTC ISO time), latest deletion first."""
        ids = sorted(e.name for e in self._trash_entries()
                     if e.is_dir(follow_symlinks=False) and fmt._RUN_ID_RE.fullmatch(e.name))
        df = runs_table(self.trash, ids)
        df.insert(1, "deleted", [fmt.iso(fmt._dt.datetime.fromtimestamp(
            (self.trash / r).stat().st_mtime, fmt._dt.UTC)) for r in df["run_id"]])
        return df.sort_values("deleted", ascending=False, kind="stable").reset_index(drop=True)

    def purge(self, run_id: str | None = None, *, older_than: float | None = None,
              by: Identity | None = None) -> builtins.list[str]:
        """Delete trashed runs for good: one (``run_id``), those deleted more than ``older_than``
        seconds ago, or (neither given) the whole trash. Returns the ids purged.

        Under a lab policy every run purged must be one ``by`` may purge; if one is not,
        PermissionDenied is raised before anything is deleted."""
        who = by or Identity.local()
        with self.audit.locked():
            return self._purge(run_id, older_than, who)

    def _purge(self, run_id: str | None, older_than: float | None,
               who: Identity) -> builtins.list[str]:
        if run_id is not None:
            self._run_dir(run_id, trash=True)
            ids = [run_id]
        else:
            ids = [e.name for e in self._trash_entries() if not e.name.startswith(".")]
        now = time.time()
        if self.policy.enforce:
            for rid in ids:
                if older_than is None or now - (self.trash / rid).stat().st_mtime >= older_than:
                    self.policy.check(who, "purge", self._manifest_any(rid))
        purged = []
        for rid in ids:
            path = self.trash / rid
            try:
                if older_than is not None and now - path.stat().st_mtime < older_than:
                    continue
                doomed = self.root / f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
                os.rename(path, doomed)  # gone from the trash at once; cleaned even if we die
            except OSError as exc:
                raise StoreError(f"cannot purge {rid}: {exc}") from exc
            shutil.rmtree(doomed, ignore_errors=True)
            purged.append(rid)
            self.audit.append(who, "purge", rid, _locked=True)
        return purged

    # -- zip -----------------------------------------------------------------------------------
    def export(self, run_id: str, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the run to one zip file (default ``./<run_id>.zip``; a folder gets
        ``<folder>/<run_id>.zip``) after verifying it. Returns the zip's path."""
        src = self._run_dir(run_id)
        if stream.is_watch(self._manifest_at(src, run_id)):
            raise StoreError(f"run {run_id} is a streamed training run (hooklab.watch); export "
                             f"to a zip is for one-shot runs. Copy its folder {src} instead "
                             "(every file its manifest names).")
        self.verify(run_id)
        return export_run(src, run_id, path)

    def import_(self, path: str | os.PathLike[str], *, by: Identity | None = None) -> str:
        """Add a run exported by :meth:`export`; returns its id in this store.

        The zip must hold exactly ``manifest.json``, ``events.parquet`` and
        ``tensors.safetensors`` (no folders, no other names: zip-slip members are refused),
        within ``max_import_bytes``, of a known format version, with files matching the
        manifest's sha256. Otherwise CorruptRunError says what is wrong and nothing is written.

        If the run's id is already used here (imported twice, or a clash), the run gets a new
        id; its manifest then records the original one as ``imported_from``.

        The run keeps the author its zip names. Under a lab policy, or when ``by`` is given,
        its manifest records ``imported_by`` (replacing whatever the zip claimed) and
        ``imported_at``, and the policy treats the importer as the owner: an author in a zip
        cannot be verified. Locally (open policy, no ``by``) the files stay byte-identical;
        the audit log records the import either way.
        """
        who = by or Identity.local()
        stamp = by is not None or self.policy.enforce
        rid = import_run(self, path, imported_by=who.to_dict() if stamp else None)
        m = self.manifest(rid)
        self.audit.append(who, "import", rid, after={
            "author": m.get("author", ""), "claimed_author_identity": m.get("author_identity"),
            "imported_from": m.get("imported_from", m["run_id"])})
        return rid
