"""The recorder and the store together under failure: saves that fail inside recording loops,
threads recording and saving into one store, recording writers killed with SIGKILL.

tests/test_store_crash.py covers failed saves, killed writers and parallel writers with
synthetic traces; here the traces come from real recordings and the hooks are checked too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

import hooklab
from hooklab.core.errors import StoreError
from hooklab.models.zoo import SimpleCNN
from hooklab.store.runs import TraceStore
from hooklab.testing import faults
from hooklab.testing.faults import InjectedFault, inject
from hooklab.testing.store_stress import check_store, wait_for
from tests.conftest import hook_counts


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: intra-op threads only add contention on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _same(a: hooklab.Trace, b: hooklab.Trace) -> None:
    pd.testing.assert_frame_equal(a.events, b.events, check_exact=True)
    assert sorted(a.tensor_keys()) == sorted(b.tensor_keys())
    for k in a.tensor_keys():
        assert torch.equal(a.tensor(k), b.tensor(k)), k


def test_failed_saves_inside_a_training_loop(tmp_path, no_leak):
    """Six training steps, each recorded and saved from inside the recording; the saves of steps
    2 (tensors file) and 4 (manifest) fail with a full disk. Training and recording go on, the
    other steps' runs are stored exactly, nothing partial is visible, no hook is left."""
    torch.manual_seed(0)
    model = SimpleCNN().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    store = TraceStore(tmp_path / "runs", durable=False)
    x, y = torch.randn(4, 3, 32, 32), [1, 2, 3, 4]
    kept: dict[int, tuple[str, hooklab.Trace]] = {}
    failures = {2: 1, 4: 2}  # step -> which file write fails (events, tensors, manifest)
    w0 = model.conv1.weight.detach().clone()
    with no_leak(model):
        for step in range(6):
            with inject("save", failures.get(step, -1)) as fault:
                with hooklab.record(model, ["conv1", "fc2"], param_grads=True, step=step,
                                    edits={"conv1": hooklab.core.edits.clip_norm(0.1)}) as rec:
                    rec.run(x, target=y)
                    opt.step()
                    try:
                        rid = store.save(rec.trace, notes=f"step {step}")
                    except StoreError as exc:
                        assert step in failures and "No space left" in str(exc)
                        assert isinstance(exc.__cause__.__cause__, InjectedFault)
                        continue
                    assert step not in failures
                kept[step] = (rid, rec.trace)
            assert fault.fired == (step in failures)
    assert not torch.equal(model.conv1.weight, w0)  # training went on
    assert sorted(kept) == [0, 1, 3, 5]
    listing = store.list()
    assert sorted(listing["run_id"]) == sorted(rid for rid, _ in kept.values())
    assert (listing["status"] == "ok").all()
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp")]
    for step, (rid, trace) in kept.items():
        loaded = store.load(rid)
        _same(loaded, trace)
        assert set(loaded.events["step"]) == {step}


def test_threads_record_and_save_into_one_store(tmp_path):
    """Six threads share one model and one store (the dashboard's pattern); each records and
    saves three runs, one thread's second save fails. Every other run is stored, holds only its
    thread's events, and no hook is left."""
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    store = TraceStore(tmp_path / "runs", durable=False)
    before = hook_counts(model)
    saved: dict[str, int] = {}
    errors: list[BaseException] = []
    failed: list[int] = []
    barrier = threading.Barrier(6)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for rep in range(3):
                nth = 0 if (i == 3 and rep == 1) else -1
                with inject("save", nth):
                    with hooklab.record(model, ["conv1", "conv3"], meta={"thread": i}) as rec:
                        rec.run(torch.full((1, 3, 32, 32), float(i)), target=i, zero_grad=False)
                        try:
                            saved[store.save(rec.trace, notes=str(i))] = i
                        except StoreError:
                            failed.append(i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and failed == [3]
    assert hook_counts(model) == before
    assert sorted(store.list()["run_id"]) == sorted(saved) and len(saved) == 17
    for rid, i in saved.items():
        tr = store.load(rid)
        ev = tr.events
        assert tr.meta["thread"] == i and ev.iloc[0]["role"] == "input"
        assert ev.iloc[0]["mean"] == float(i) and ev.iloc[0]["std"] == 0.0
        assert list(ev.role) == ["input", "output", "input", "output", "grad_output",
                                 "grad_output"]


def _log_lines(path) -> tuple[list[str], list[str], list[str]]:
    """Committed run ids, error lines, and the temp folders of HALTED lines, from the log."""
    if not os.path.exists(path):
        return [], [], []
    lines = [ln for ln in open(path).read().splitlines() if ln and not ln.startswith("CLEANED")]
    halted = [ln.split(" ", 2)[2] for ln in lines if ln.startswith("HALTED ")]
    return ([ln for ln in lines if not ln.startswith(("ERROR", "HALTED"))],
            [ln for ln in lines if ln.startswith("ERROR")], halted)


@pytest.mark.slow
def test_recording_writers_killed_mid_save(tmp_path):
    """A process recording a CNN and saving each trace is SIGKILLed inside its save, at a
    named point reached on purpose (faults.halt_at): after the tensors file (no manifest yet)
    and with every file written but before the rename, after 0 and 1 committed saves. Each
    kill is checked to have landed there; afterwards the store lists only complete runs,
    every run the writers committed is there and loads intact, the run stored before is
    unharmed, and the killed writers' temporary folders are gone on reopening."""
    root, log = tmp_path / "runs", tmp_path / "writers.log"
    TraceStore(root).save(hooklab.Trace(meta={"model": "none"}), run_id="existing")
    ctx = mp.get_context("forkserver")  # children fork from a server that imported hooklab
    ctx.set_forkserver_preload(["hooklab.testing.faults", "hooklab.recording.recorder", "hooklab.store.runs",
                                "hooklab.models.zoo"])
    plan = [("after_tensors", 0), ("before_commit", 1), ("after_tensors", 1),
            ("before_commit", 0)]
    for k, (point, nth) in enumerate(plan):
        halted = ctx.Event()
        p = ctx.Process(target=faults.recording_writer,
                        args=(str(root), str(log), k, 0, None, (point, nth, halted)))
        p.start()
        reached = wait_for(halted, p, 600)  # a hang guard, not a time limit; stops if it dies
        temp = Path(_log_lines(log)[2][-1]) if reached else None
        files = sorted(os.listdir(temp)) if temp is not None else []
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert reached, (f"writer {k} never reached {point} (exit code {p.exitcode}): "
                         f"{_log_lines(log)[1]}")
        assert files == sorted(faults.HALT_POINTS[point][1]), (point, files)  # landed there
        assert temp.is_dir()  # killed inside the save: its temporary folder is left behind
    reported, errors, halted_dirs = _log_lines(log)
    assert errors == [] and len(halted_dirs) == len(plan)
    assert len(reported) == sum(nth for _, nth in plan)  # the saves before each halt committed
    figures = check_store(root, reported + ["existing"])
    assert figures["runs_lost"] == 0 and figures["duplicate_ids"] == 0
    assert figures["partial_visible"] == 0 and figures["unloadable"] == 0
    assert figures["temp_left"] == 0
    store = TraceStore(root)
    assert sorted(store.list()["run_id"]) == sorted(reported + ["existing"])  # nothing partial
    assert store.load("existing").meta["model"] == "none"
    for rid in reported:
        tr = store.load(rid)
        assert tr.meta["model"] == "SimpleCNN" and len(tr.select(role="edited")) > 0


def test_fault_in_save_of_one_thread_spares_the_others(tmp_path):
    """The injector's save fault is confined to its thread (so the test above means what it
    says): a save in another thread during the block succeeds."""
    from hooklab.store import format as store_format

    originals = (store_format.write_events, store_format.write_tensors,
                 store_format.write_manifest)
    store = TraceStore(tmp_path / "runs", durable=False)
    trace = hooklab.Trace(meta={"model": "none"})
    out: list[str] = []
    with inject("save", 0):
        t = threading.Thread(target=lambda: out.append(store.save(trace)))
        t.start()
        t.join()
        with pytest.raises(StoreError):
            store.save(trace)
    assert len(out) == 1 and store.list()["run_id"].tolist() == out
    assert (store_format.write_events, store_format.write_tensors,
            store_format.write_manifest) == originals  # the writers are restored
    with pytest.raises(ValueError, match="fault point"):
        with inject("sideways", 0):
            pass
