"""Streamed (watch) runs in the store: format, live reading by another store instance, kill -9
mid-training, failing segment writes, and the store operations on a watch run."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hooklab
from hooklab.core.errors import CorruptRunError, StoreError
from hooklab.core.trace import EVENT_COLUMNS
from hooklab.store import format as fmt
from hooklab.store import stream
from hooklab.store.runs import TraceStore
from hooklab.store.stream import open_watch


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(n)]


def _train_step(model, opt, x, y) -> float:
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


@pytest.fixture
def store(tmp_path) -> TraceStore:
    return TraceStore(tmp_path / "runs")


def _watched_run(store, steps=6, **kw) -> hooklab.recording.watch.Watcher:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw = {"every": 2, "segment_steps": 1, **kw}
    with hooklab.watch(model, store, author="ana", tags="a, b", notes="n", **kw) as w:
        for x, y in _batches(steps):
            w.step(loss=_train_step(model, opt, x, y))
    return w


def test_on_disk_format_and_reader(store):
    w = _watched_run(store, tensors_at=[2])
    path = store.root / w.run_id
    m = json.loads((path / fmt.MANIFEST).read_text())
    assert m["kind"] == "watch" and m["format_version"] == stream.WATCH_FORMAT_VERSION
    assert m["status"] == "finished" and m["meta"]["page"] == "training"
    assert m["meta"]["every"] == 2 and m["writer"]["pid"] == os.getpid()
    assert [s["steps"] for s in m["segments"]] == [[0], [2], [4], []]  # last: step 5's scalars
    names = sorted(p.name for p in path.iterdir())
    assert fmt.MANIFEST in names and "seg-000001.tensors.safetensors" in names
    for seg in m["segments"]:
        for info in seg["files"].values():
            assert fmt.sha256_file(path / info["name"]) == info["sha256"]
    run = open_watch(store, w.run_id)
    assert run.status == "finished" and run.steps == [0, 2, 4] and run.segments == 4
    assert list(run.events.columns) == list(EVENT_COLUMNS)
    assert run.events["seq"].tolist() == list(range(len(run.events)))
    assert set(run.events["step"]) == {0, 2, 4}
    assert run.scalar("loss").index.tolist() == list(range(6))
    kept = run.events[run.events["key"] != ""]
    assert set(kept["step"]) == {2}
    row = kept.iloc[0]
    assert float(run.tensor(row["key"]).norm()) == pytest.approx(row["norm"], rel=1e-5)
    assert str(run.events["layer"].dtype) == "category"
    few = store.watch_run(w.run_id, columns=["step", "layer", "role", "norm"])
    assert list(few.events.columns) == ["step", "layer", "role", "norm"]


def test_store_operations_on_a_watch_run(store, tmp_path):
    w = _watched_run(store)
    rows = store.list()
    assert rows["run_id"].tolist() == [w.run_id]
    row = rows.iloc[0]
    assert row["status"] == "ok" and row["page"] == "training" and row["author"] == "ana"
    assert row["tags"] == "a,b" and row["n_events"] == store.manifest(w.run_id)["n_events"] > 0
    store.verify(w.run_id)
    trace = store.load(w.run_id)
    assert len(trace) == row["n_events"] and trace.meta["kind"] == "watch"
    assert set(trace.events["step"]) == {0, 2, 4}
    assert len(store.events(w.run_id)) == len(trace)
    q = store.query(layer="3", role="grad_output")
    assert q["step"].tolist() == [0, 2, 4] and set(q["run_id"]) == {w.run_id}
    with pytest.raises(StoreError, match="streamed training run"):
        store.export(w.run_id, tmp_path)
    store.update(w.run_id, notes="changed")
    assert store.manifest(w.run_id)["notes"] == "changed"
    store.verify(w.run_id)
    store.delete(w.run_id)
    assert store.list().empty
    store.restore(w.run_id)
    assert open_watch(store, w.run_id).steps == [0, 2, 4]
    with pytest.raises(StoreError, match="one-shot"):
        with hooklab.record(_model(), keep_tensors=False) as rec:
            rec.run(torch.randn(1, 3, 6, 6))
        open_watch(store, store.save(rec.trace))


def test_failed_body_marks_the_run_failed(store):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyError):
        with hooklab.watch(model, store, every=1, segment_steps=2) as w:
            for i, (x, y) in enumerate(_batches(5)):
                w.step(loss=_train_step(model, opt, x, y))
                if i == 2:
                    raise KeyError("boom")
    run = open_watch(store, w.run_id)
    assert run.status == "failed" and "KeyError" in run.error and "boom" in run.error
    assert run.steps == [0, 1, 2]
    assert store.list().iloc[0]["status"] == "failed"


def test_a_second_store_sees_the_run_live_while_training_goes_on(store):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with hooklab.watch(model, store, every=1, segment_steps=2) as w:
        reader = TraceStore(store.root)
        first = open_watch(reader, w.run_id)
        assert first.status == "live" and first.steps == [] and first.events.empty
        for x, y in _batches(6):
            w.step(loss=_train_step(model, opt, x, y))
            assert w.flush()  # segments are written by a background thread
            run = reader.watch_run(w.run_id)
            seen.append((run.status, run.steps, run.segments))
        assert reader.list().iloc[0]["status"] == "live"
        with pytest.raises(StoreError, match="still being written"):
            reader.delete(w.run_id)
    assert seen[0] == ("live", [], 0) and seen[1] == ("live", [0, 1], 1)
    assert seen[3] == ("live", [0, 1, 2, 3], 2)
    assert open_watch(TraceStore(store.root), w.run_id).status == "finished"


def test_segment_write_failure_keeps_committed_steps_and_training_goes_on(store, monkeypatch,
                                                                         caplog):
    real = fmt.write_events
    calls = [0]

    def flaky(path, events, durable):
        calls[0] += 1
        if calls[0] in (2, 3):  # the second segment fails twice, mid-write (disk full)
            with open(path, "wb") as f:
                f.write(b"PAR1 half")
            raise OSError(28, "No space left on device")
        return real(path, events, durable)

    monkeypatch.setattr(fmt, "write_events", flaky)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with hooklab.watch(model, store, every=1, segment_steps=2) as w:
        for i, (x, y) in enumerate(_batches(8)):
            w.step(loss=_train_step(model, opt, x, y))
            if i == 3:  # the failed segment: committed steps are still loadable
                assert not w.flush()
                run = open_watch(TraceStore(store.root), w.run_id, verify=True)
                assert run.steps == [0, 1]
    assert "No space left" in caplog.text and len(w.write_errors) == 2 and not w.lost_steps
    run = open_watch(store, w.run_id, verify=True)
    assert run.steps == list(range(8)) and run.status == "finished"  # retried: nothing lost
    store.verify(w.run_id)


def test_segment_writes_that_keep_failing_are_reported_at_exit(store, monkeypatch, caplog):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with hooklab.watch(model, store, every=1, segment_steps=2) as w:
        for i, (x, y) in enumerate(_batches(6)):
            if i == 2:
                assert w.flush()
                monkeypatch.setattr(stream, "_write_parquet", _disk_full)
            w.step(loss=_train_step(model, opt, x, y))
    assert w.lost_steps == [2, 3, 4, 5]
    assert "could not be written" in caplog.text
    run = open_watch(store, w.run_id, verify=True)
    assert run.steps == [0, 1]
    store.verify(w.run_id)


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_unnamed_files_are_ignored_and_damage_is_reported(store):
    w = _watched_run(store)
    path = store.root / w.run_id
    (path / "seg-000099.events.parquet").write_bytes(b"interrupted")
    assert open_watch(store, w.run_id).steps == [0, 2, 4]
    store.verify(w.run_id)
    name = store.manifest(w.run_id)["segments"][1]["files"]["events"]["name"]
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(data))
    with pytest.raises(CorruptRunError, match="sha256"):
        store.verify(w.run_id)
    (path / name).write_bytes(bytes(data[:10]))
    assert store.list().iloc[0]["status"].startswith("corrupt:")
    m = json.loads((path / fmt.MANIFEST).read_text())
    m["segments"][0]["files"]["events"]["name"] = "../../etc/passwd"
    (path / fmt.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CorruptRunError, match="segment 0"):
        store.manifest(w.run_id)


def test_an_older_hooklab_refuses_a_watch_run_clearly(store):
    w = _watched_run(store)
    raw = (store.root / w.run_id / fmt.MANIFEST).read_bytes()
    with pytest.raises(CorruptRunError, match="unknown format version 2"):
        fmt.parse_manifest(raw, "run x")  # the format-1 reader (what an older hooklab has)


def _line(proc: subprocess.Popen, deadline: float) -> str:
    """The child's next stdout line; "" when it died or the deadline passed (never hangs)."""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return ""
    return ""


_CHILD = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F
    from torch import nn
    import hooklab
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with hooklab.watch(model, sys.argv[1], every=1, segment_steps=2, run_id="killed") as w:
        step = 0
        while True:
            x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4,))
            opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
            w.step(loss=loss.item())
            step += 1
            if step % 2 == 0:
                w.flush()
                print("COMMITTED", step, flush=True)
""")


def test_kill_9_mid_training_leaves_every_committed_step(store):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(store.root)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        committed = 0
        deadline = time.monotonic() + 180
        while committed < 6 and time.monotonic() < deadline:
            line = _line(proc, deadline)
            if not line:
                break
            if line.startswith("COMMITTED"):
                committed = int(line.split()[1])
        assert committed >= 6, "the child did not commit segments"
        run = open_watch(TraceStore(store.root), "killed")
        assert run.status == "live"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    reader = TraceStore(store.root)
    run = open_watch(reader, "killed", verify=True)
    assert run.status == "ended early"
    assert len(run.steps) >= 6 and run.steps == list(range(len(run.steps)))
    assert run.scalar("loss").index.tolist() == list(range(len(run.steps)))
    reader.verify("killed")
    assert reader.list().iloc[0]["status"] == "ended early"
    assert len(reader.load("killed")) == run.manifest["n_events"]


_HALT_CHILD = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F
    from torch import nn
    import hooklab
    from hooklab.testing.faults import halt_at
    root, point, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with halt_at(point, lambda d: print("HALTED", d, flush=True), nth=nth):
        with hooklab.watch(model, root, every=1, segment_steps=2, run_id="halted") as w:
            while True:
                x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4,))
                opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
                w.step()
""")


@pytest.mark.parametrize(("point", "nth"), [
    ("after_events", 2),   # segment 2's events file written, nothing else
    ("before_commit", 3),  # segment 2's files and a temporary manifest written, not swapped in
])
def test_kill_9_in_the_middle_of_a_segment_commit(store, point, nth):
    """Killed at an exact point of the third segment's commit (hooklab.testing.faults.halt_at):
    the two committed segments are intact, the half-written one is ignored."""
    proc = subprocess.Popen([sys.executable, "-c", _HALT_CHILD, str(store.root), point,
                             str(nth)], stdout=subprocess.PIPE, text=True)
    try:
        line = _line(proc, time.monotonic() + 180)
        assert line.startswith("HALTED"), f"the child did not halt: {line!r}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    path = store.root / "halted"
    leftovers = {p.name for p in path.iterdir()} - {fmt.MANIFEST}
    assert "seg-000002.events.parquet" in leftovers  # the interrupted segment's file
    reader = TraceStore(store.root)
    run = open_watch(reader, "halted", verify=True)
    assert run.status == "ended early" and run.steps == [0, 1, 2, 3] and run.segments == 2
    assert set(run.events["step"]) == {0, 1, 2, 3}
    reader.verify("halted")
    assert reader.list().iloc[0]["status"] == "ended early"


def test_status_of_a_live_run_written_on_another_machine():
    m = {"status": "live", "writer": {"pid": 1, "host": "elsewhere", "heartbeat": 1000.0}}
    assert stream.run_status(m, now=1000.0 + 30) == "live"
    assert stream.run_status(m, now=1000.0 + stream.STALE_SECONDS + 1) == "ended early"
    assert stream.run_status({**m, "status": "finished"}, now=1e12) == "finished"
    dead = {"status": "live", "writer": {"pid": 2**22 + 12345, "host": stream._HOSTNAME,
                                         "heartbeat": time.time()}}
    assert stream.run_status(dead) == "ended early"  # same machine: the pid is not alive
    alive = {**dead, "writer": {**dead["writer"], "pid": os.getpid()}}
    assert stream.run_status(alive) == "live"
