"""The store's audit log: one chained JSON line per change to a run.

File: ``<store>/.audit/log.jsonl`` (a dot folder, so listings never see it). Each line is a JSON
object with ``seq`` (1, 2, ...), ``time`` (UTC ISO), ``who`` (an identity), ``action``,
``run_id``, optional ``before`` / ``after`` (small values; long text is replaced by its sha256
and length), ``prev`` (the previous line's ``hash``; 64 zeros for the first) and ``hash`` (sha256
of the line's canonical JSON without ``hash``).

Writing: under an exclusive ``flock`` of ``<store>/.audit/lock`` (processes and threads, also
on one machine sharing a folder), the writer reads the last line, appends the new one with one
``write``, flushes and fsyncs. A crash mid-append leaves at most an incomplete last line; the
next append cuts it off and records that it did (``repaired``), and :func:`verify` reports it
until then. Verifying recomputes every hash and link: an edited, removed, inserted or reordered
line is reported, never silently accepted.

Limits: an attacker who can write the store can rewrite the whole chain consistently; keep the
``head`` hash :func:`verify` prints somewhere else (a lab notebook) to detect that. Removing the
last lines leaves a valid shorter chain; the head hash detects that too.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hooklab.core.errors import StoreError
from hooklab.store.access import Identity

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: in-process threads only
    fcntl = None  # type: ignore[assignment]

__all__ = ["AUDIT_DIR", "GENESIS", "AuditLog", "AuditReport", "history_table", "small"]

log = logging.getLogger(__name__)
AUDIT_DIR = ".audit"
LOG_NAME = "log.jsonl"
GENESIS = "0" * 64
#: Text longer than this is recorded as its sha256 and length, not verbatim.
SMALL_CHARS = 500


def small(value: Any) -> Any:
    """``value`` if short, else ``{"sha256": ..., "chars": n}`` (notes can be long)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(text) <= SMALL_CHARS:
        return value
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "chars": len(text)}


def _change_text(entry: Mapping[str, Any]) -> str:
    before, after = entry.get("before") or {}, entry.get("after") or {}
    if "before" in entry:
        return "; ".join(f"{k}: {json.dumps(before.get(k), ensure_ascii=False)} -> "
                         f"{json.dumps(v, ensure_ascii=False)}" for k, v in after.items())
    return "; ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in after.items()
                     if v is not None)


def history_table(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Audit lines as a table: seq, time (UTC), who, action, change (before -> after)."""
    rows = []
    for e in entries:
        who = Identity.from_dict(e.get("who"))
        rows.append({"seq": e.get("seq"), "time": str(e.get("time", ""))[:19].replace("T", " "),
                     "who": who.label if who else "?", "action": e.get("action", ""),
                     "change": _change_text(e)})
    return pd.DataFrame(rows, columns=["seq", "time", "who", "action", "change"])


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _digest(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


@dataclass
class AuditReport:
    """What :meth:`AuditLog.verify` found.

    Attributes:
        entries: number of intact lines read.
        problems: one sentence per line that is damaged, tampered, missing or out of order.
        head: hash of the last intact line (note it elsewhere to detect a rewritten log).
        notes: repairs recorded in the log (an incomplete line cut off after a crash).
    """

    entries: int = 0
    problems: list[str] = field(default_factory=list)
    head: str = GENESIS
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    """The audit log of the store at ``root`` (created on the first append)."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.dir = Path(root) / AUDIT_DIR
        self.path = self.dir / LOG_NAME
        self.durable = durable

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the log's exclusive lock (a change and its line are then one step)."""
        try:
            self.dir.mkdir(exist_ok=True)
            fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StoreError(f"cannot open the audit log in {self.dir}: {exc}") from exc
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._check_writable()  # before the caller changes anything
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _check_writable(self) -> None:
        """Raise StoreError now if the next line could not be appended (damaged last line)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read the audit log {self.path}: {exc}") from exc
        try:
            self._tail(fd)
        finally:
            os.close(fd)

    def _tail(self, fd: int) -> tuple[int, str, int]:
        """(last seq, last hash, length of the complete part) of the open log."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS, 0
        step, pos, buf = 65536, size, b""
        while pos > 0:  # read backwards until two newlines (or the start) are in buf
            n = min(step, pos)
            pos -= n
            buf = os.pread(fd, n, pos) + buf
            if buf.count(b"\n") >= 2 or pos == 0:
                break
        complete = pos + buf.rfind(b"\n") + 1 if b"\n" in buf else 0
        lines = buf[: complete - pos].splitlines() if complete > pos else []
        if not lines:
            if complete == 0:
                return 0, GENESIS, 0
            raise StoreError(f"audit log {self.path}: cannot read its last line")
        try:
            last = json.loads(lines[-1])
            return int(last["seq"]), str(last["hash"]), complete
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"audit log {self.path}: the last line is damaged ({exc}); "
                             "run `hooklab runs audit` to see the problems") from exc

    def append(self, who: Identity, action: str, run_id: str, *,
               before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None, _locked: bool = False) -> dict[str, Any]:
        """Append one line (taking the lock unless the caller holds it); returns the entry."""
        if not _locked:
            with self.locked():
                return self.append(who, action, run_id, before=before, after=after,
                                   extra=extra, _locked=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StoreError(f"cannot write the audit log {self.path}: {exc}") from exc
        try:
            seq, prev, complete = self._tail(fd)
            entry: dict[str, Any] = {
                "seq": seq + 1, "time": _dt.datetime.now(_dt.UTC).isoformat(
                    timespec="microseconds"), "who": who.to_dict(), "action": action,
                "run_id": run_id, "prev": prev}
            if before is not None:
                entry["before"] = {k: small(v) for k, v in before.items()}
            if after is not None:
                entry["after"] = {k: small(v) for k, v in after.items()}
            if extra:
                entry.update(extra)
            torn = os.fstat(fd).st_size - complete
            if torn:
                log.warning("audit log %s: cut off an incomplete last line (%d bytes)",
                            self.path, torn)
                entry["repaired"] = f"cut off an incomplete line of {torn} bytes"
                os.ftruncate(fd, complete)
            entry["hash"] = _digest(entry)
            data = _canonical(entry) + b"\n"
            written = os.pwrite(fd, data, complete)
            if written != len(data):
                os.ftruncate(fd, complete)
                raise StoreError(f"audit log {self.path}: short write")
            if self.durable:
                os.fsync(fd)
        except OSError as exc:
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot write the audit log {self.path}: {exc}") from exc
        finally:
            os.close(fd)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every intact line, in order (damaged lines are skipped; :meth:`verify` names them)."""
        return self._read()[0]

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The lines about ``run_id``, oldest first."""
        return [e for e in self.entries() if e.get("run_id") == run_id]

    def _read(self) -> tuple[list[dict[str, Any]], AuditReport]:
        report = AuditReport()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], report
        except OSError as exc:
            raise StoreError(f"cannot read the audit log {self.path}: {exc}") from exc
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        good: list[dict[str, Any]] = []
        prev, expect = GENESIS, 1
        for no, line in enumerate(lines, 1):
            try:
                e = json.loads(line)
                if not isinstance(e, dict):
                    raise ValueError("not an object")
                seq, h = int(e["seq"]), e["hash"]
            except (ValueError, KeyError, TypeError) as exc:
                report.problems.append(f"line {no}: not a valid audit entry ({exc}); "
                                       "damaged or edited")
                continue
            if _digest(e) != h:
                report.problems.append(f"line {no} (seq {seq}): its content does not match its "
                                       "hash: the line was edited")
            elif e.get("prev") != prev:
                what = ("a line before it was removed" if seq > expect else
                        "lines were reordered or inserted" if seq < expect else
                        "the line before it was changed")
                report.problems.append(f"line {no} (seq {seq}): does not follow the line "
                                       f"before it ({what})")
            elif seq != expect:
                report.problems.append(f"line {no}: seq {seq}, expected {expect}")
            if "repaired" in e:
                report.notes.append(f"seq {seq}: {e['repaired']} (a crash mid-append)")
            good.append(e)
            prev, expect = str(h), seq + 1
        if tail:
            report.problems.append(f"line {len(lines) + 1}: incomplete ({len(tail)} bytes, no "
                                   "newline): a crash mid-append; the next change cuts it off")
        report.entries = len(good)
        report.head = prev
        return good, report

    def verify(self) -> AuditReport:
        """Recompute every line's hash and link; see :class:`AuditReport`."""
        return self._read()[1]
