"""Crash safety and concurrency of the store: failed saves, killed writers, parallel writers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from hooklab.core.errors import StoreError
from hooklab.store import format as fmt
from hooklab.store import runs as store_mod
from hooklab.store.runs import _HOST, TraceStore
from hooklab.testing.faults import HALT_POINTS
from hooklab.testing.store_stress import concurrent_saves, kill_at_points, synthetic_trace


def temp_dirs(store: TraceStore) -> list[str]:
    return [p.name for p in store.root.iterdir() if p.name.startswith(".tmp")]


@pytest.fixture
def store(tmp_path) -> TraceStore:
    s = TraceStore(tmp_path / "runs")
    s.save(synthetic_trace(2, 8), run_id="existing")
    return s


def _assert_only_existing(store: TraceStore) -> None:
    assert store.list()["run_id"].tolist() == ["existing"]
    assert temp_dirs(store) == []
    store.verify("existing")
    reopened = TraceStore(store.root)
    assert reopened.list()["run_id"].tolist() == ["existing"] and temp_dirs(reopened) == []


def test_failure_while_writing_tensors_leaves_nothing(store, monkeypatch):
    real = fmt.write_tensors

    def half_then_fail(path, tensors, durable):
        real(path, tensors, durable)
        with open(path, "r+b") as f:
            f.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fmt, "write_tensors", half_then_fail)
    with pytest.raises(StoreError, match="No space left"):
        store.save(synthetic_trace(4, 1024))
    _assert_only_existing(store)


@pytest.mark.parametrize("exc", [RuntimeError("bug"), KeyboardInterrupt()])
def test_exception_while_writing_manifest_leaves_nothing(store, monkeypatch, exc):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(fmt, "write_manifest", fail)
    with pytest.raises(type(exc)):
        store.save(synthetic_trace(2, 64))
    _assert_only_existing(store)


def test_failed_commit_leaves_nothing(store, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store_mod.os, "rename", refuse)
    with pytest.raises(StoreError, match="Permission denied"):
        store.save(synthetic_trace(2, 64))
    monkeypatch.undo()
    _assert_only_existing(store)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftover_temp_dirs_are_cleaned_on_open(store):
    root = store.root
    dead = root / f".tmp-{_HOST}-{_dead_pid()}-aaaa"  # a writer on this machine that died
    mine = root / f".tmp-{_HOST}-{os.getpid()}-bbbb"  # a live writer (this process)
    foreign_new = root / ".tmp-0badc0de-1-cccc"  # another machine, recent: may be writing
    foreign_old = root / ".tmp-0badc0de-1-dddd"  # another machine, two hours old
    for d in (dead, mine, foreign_new, foreign_old):
        d.mkdir()
        (d / "tensors.safetensors").write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(foreign_old, (old, old))
    reopened = TraceStore(root)
    assert sorted(reopened.cleaned) == sorted([dead.name, foreign_old.name])
    assert sorted(temp_dirs(reopened)) == sorted([mine.name, foreign_new.name])
    assert reopened.list()["run_id"].tolist() == ["existing"]  # temp dirs are never runs


def test_sigkilled_writers_leave_only_complete_runs(tmp_path):
    """Writers SIGKILLed at each named point of a save (after the events file, after the
    tensors file, with every file written but before the rename), after 0, 1 or 2 committed
    saves: each kill is checked to have landed there (the temporary folder holds exactly the
    point's files), and afterwards the store lists every committed run, no partial one, and
    no temporary folder."""
    root = tmp_path / "killed"
    TraceStore(root).save(synthetic_trace(2, 8), run_id="existing")
    points = list(HALT_POINTS) * 2
    figures = kill_at_points(root, points, numel=1 << 12)
    assert figures["errors"] == 0 and figures["kills"] == len(points)
    for k, hit in enumerate(figures["landed"]):
        assert hit["point"] == points[k]
        assert hit["files"] == sorted(HALT_POINTS[points[k]][1]), hit  # the kill landed there
        assert hit["temp_after_kill"], hit  # SIGKILL: nothing cleaned up behind the writer
    assert figures["runs_reported"] == sum(k % 3 for k in range(len(points)))
    assert figures["runs_lost"] == figures["duplicate_ids"] == 0
    assert figures["partial_visible"] == 0 and figures["unloadable"] == 0
    # each killed writer's folder was removed by the next writer, the last one by the reopen
    assert figures["cleaned"] == len(points) - 1 and figures["temp_before_reopen"] == 1
    assert figures["temp_left"] == 0
    assert figures["runs_listed"] == figures["runs_reported"] + 1  # + "existing", unharmed
    TraceStore(root).verify("existing")


def test_concurrent_processes_all_succeed(tmp_path):
    figures = concurrent_saves(tmp_path / "shared", processes=4, saves=5)
    assert figures["failed_writers"] == 0, figures["first_error"]
    assert figures["runs_listed"] == figures["runs_reported"] == 20
    assert figures["runs_lost"] == figures["duplicate_ids"] == 0
    assert figures["partial_visible"] == figures["unloadable"] == figures["temp_left"] == 0


def test_concurrent_threads_all_succeed(tmp_path):
    store = TraceStore(tmp_path / "threads", durable=False)
    ids: list[str] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(5):
                ids.append(store.save(synthetic_trace(3, 256, seed=seed * 10 + i)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(store.list()["run_id"]) == sorted(ids) and len(set(ids)) == 20
    for rid in ids:
        store.verify(rid)
