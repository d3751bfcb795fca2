"""The store's audit log: one chained line per change; tampering is reported; concurrent
writers and a crash mid-append lose or corrupt nothing."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hooklab.core.errors import StoreError
from hooklab.store.access import Identity
from hooklab.store.audit import GENESIS, AuditLog
from hooklab.store.runs import TraceStore
from hooklab.testing.store_stress import synthetic_trace

ANA = Identity(name="Ana", email="ana@lab.org", subject="sub-ana", provider="idp")


@pytest.fixture
def store(tmp_path):
    s = TraceStore(tmp_path / "runs", durable=False)
    rid = s.save(synthetic_trace(1, 4), notes="n0", by=ANA)
    s.update(rid, notes="n1", by=ANA)
    s.update(rid, tags="t", by=ANA)
    s.delete(rid, by=ANA)
    s.restore(rid, by=ANA)
    return s, rid


def lines(store: TraceStore) -> list[bytes]:
    return store.audit.path.read_bytes().splitlines(keepends=True)


def test_every_change_is_one_chained_line(store):
    s, rid = store
    hist = s.history(rid)
    assert [e["action"] for e in hist] == ["save", "update", "update", "trash", "restore"]
    assert [e["seq"] for e in hist] == [1, 2, 3, 4, 5]
    assert hist[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(hist, hist[1:], strict=False))
    assert hist[1]["before"] == {"notes": "n0"} and hist[1]["after"] == {"notes": "n1"}
    assert hist[2]["before"] == {"tags": []} and hist[2]["after"] == {"tags": ["t"]}
    assert all(e["who"] == ANA.to_dict() and e["time"].endswith("+00:00") for e in hist)
    report = s.verify_audit()
    assert report.ok and report.entries == 5 and report.head == hist[-1]["hash"]


def test_long_notes_are_recorded_by_hash(store):
    s, rid = store
    s.update(rid, notes="x" * 5000, by=ANA)
    after = s.history(rid)[-1]["after"]["notes"]
    assert after["chars"] == 5000 and len(after["sha256"]) == 64


def test_an_edited_line_is_reported(store):
    s, _ = store
    ls = lines(s)
    e = json.loads(ls[1])
    e["who"]["name"] = "Mallory"  # rewrite who did it, keep the stored hash
    ls[1] = (json.dumps(e) + "\n").encode()
    s.audit.path.write_bytes(b"".join(ls))
    report = s.verify_audit()
    assert not report.ok
    assert any("line 2" in p and "edited" in p for p in report.problems), report.problems


def test_an_edited_line_with_a_recomputed_hash_breaks_the_next_link(store):
    s, _ = store
    from hooklab.store.audit import _digest

    ls = lines(s)
    e = json.loads(ls[1])
    e["after"] = {"notes": "something else"}
    e["hash"] = _digest(e)
    ls[1] = (json.dumps(e) + "\n").encode()
    s.audit.path.write_bytes(b"".join(ls))
    problems = s.verify_audit().problems
    assert any("line 3" in p and "does not follow" in p for p in problems), problems


def test_a_removed_line_is_reported(store):
    s, _ = store
    ls = lines(s)
    del ls[2]
    s.audit.path.write_bytes(b"".join(ls))
    problems = s.verify_audit().problems
    assert any("removed" in p for p in problems), problems


def test_reordered_lines_are_reported(store):
    s, _ = store
    ls = lines(s)
    ls[1], ls[2] = ls[2], ls[1]
    s.audit.path.write_bytes(b"".join(ls))
    problems = s.verify_audit().problems
    assert problems and any("reordered" in p or "removed" in p for p in problems), problems


def test_a_garbage_line_is_reported_and_blocks_no_read(store):
    s, rid = store
    ls = lines(s)
    ls.insert(2, b"not json\n")
    s.audit.path.write_bytes(b"".join(ls))
    report = s.verify_audit()
    assert any("line 3" in p and "not a valid" in p for p in report.problems)
    assert len(s.history(rid)) == 5  # the intact lines are still shown


def test_a_damaged_last_line_refuses_further_changes_with_one_message(store):
    s, rid = store
    s.audit.path.write_bytes(b"".join(lines(s)[:-1]) + b"{broken}\n")
    before = s.manifest(rid)["notes"]
    with pytest.raises(StoreError, match="last line is damaged"):
        s.update(rid, notes="not logged, so not done", by=ANA)
    assert s.manifest(rid)["notes"] == before


def _appender(root: str, n: int, name: str) -> None:
    log = AuditLog(root, durable=True)
    who = Identity.local(name)
    for i in range(n):
        log.append(who, "update", f"run-{name}", after={"i": i})


def test_concurrent_appends_from_processes_keep_one_chain(tmp_path):
    ctx = mp.get_context("fork")  # no re-import of torch per writer
    procs = [ctx.Process(target=_appender, args=(str(tmp_path), 25, f"w{k}")) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    log = AuditLog(tmp_path)
    report = log.verify()
    assert report.ok, report.problems
    entries = log.entries()
    assert [e["seq"] for e in entries] == list(range(1, 101))
    for k in range(4):  # each writer's lines all arrived, in its own order
        mine = [e["after"]["i"] for e in entries if e["run_id"] == f"run-w{k}"]
        assert mine == list(range(25))


def test_a_crash_mid_append_is_reported_then_repaired_visibly(tmp_path):
    log = AuditLog(tmp_path, durable=False)
    log.append(ANA, "save", "r1")
    full = log.append(ANA, "update", "r1", after={"notes": "x"})
    log.path.write_bytes(log.path.read_bytes() + b'{"seq": 3, "time": "2026-')  # torn write
    report = log.verify()
    assert not report.ok and any("incomplete" in p for p in report.problems)
    assert report.entries == 2 and report.head == full["hash"]
    nxt = log.append(ANA, "trash", "r1")
    assert nxt["seq"] == 3 and nxt["prev"] == full["hash"] and "repaired" in nxt
    report = log.verify()
    assert report.ok and report.entries == 3
    assert report.notes and "crash" in report.notes[0]


CRASHER = """
import sys
from hooklab.store.access import Identity
from hooklab.store.audit import AuditLog
log = AuditLog(sys.argv[1], durable=True)
print("ready", flush=True)
i = 0
while True:
    log.append(Identity.local("crasher"), "update", "r", after={"notes": "n" * 400, "i": i})
    i += 1
"""


@pytest.mark.slow  # the child process imports hooklab (torch): ~5 s idle, 30 s under load
def test_a_writer_killed_while_appending_leaves_a_verifiable_log(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(tmp_path)],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    log = AuditLog(tmp_path)
    deadline = time.monotonic() + 60
    while (not log.path.exists() or log.path.stat().st_size < 20_000) and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    report = log.verify()
    # at most the last line is incomplete; every complete line chains
    assert all("incomplete" in p for p in report.problems), report.problems
    assert report.entries >= 5
    log.append(Identity.local("next"), "update", "r")
    after = log.verify()
    assert after.ok and after.entries == report.entries + 1


def test_refused_or_failed_changes_write_no_line(tmp_path):
    s = TraceStore(tmp_path / "runs", durable=False)
    with pytest.raises(StoreError):
        s.update("no-such-run", notes="x")
    assert not Path(s.audit.path).exists() or s.audit.entries() == []
