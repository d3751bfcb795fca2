"""Stress checks of the trace store: killed writers, concurrent writers, write throughput.

The tests run these with small numbers; ``benchmarks/`` scripts run the long versions and
print the figures. Writers are separate processes forked from a ``forkserver`` that has already
imported hooklab, so each one starts in milliseconds and is really killed with SIGKILL:
at random moments (:func:`kill_writers`, for the benchmarks) or, deterministically, at named
points inside a save (:func:`kill_at_points`, for the tests; :data:`hooklab.testing.faults.HALT_POINTS`).

Example:
    >>> figures = kill_writers("/tmp/store", kills=100)
    >>> figures["runs_lost"], figures["partial_visible"], figures["temp_left"]
    (0, 0, 0)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from pathlib import Path
from typing import Any

import torch

from hooklab.core.trace import Trace
from hooklab.store.runs import _TMP_PREFIX, TraceStore
from hooklab.testing.faults import HALT_POINTS, _halting


def synthetic_trace(n_events: int = 4, numel: int = 1024, seed: int = 0,
                    dtype: torch.dtype = torch.float32) -> Trace:
    """A trace with ``n_events`` forward events, each storing a random ``numel``-element tensor.

    For store tests and benchmarks that must not depend on a model or the recorder.
    """
    gen = torch.Generator().manual_seed(seed)
    trace = Trace(meta={"model": "synthetic", "layers": [f"layer{i}" for i in range(n_events)],
                        "input": f"synthetic seed={seed}"})
    for i in range(n_events):
        t = torch.randn(numel, generator=gen).to(dtype)
        trace.record_event("forward", "forward", f"layer{i}", "output", t,
                           key=f"{i}:layer{i}:output", payload=t)
    return trace


def wait_for(event: Any, process: Any, timeout: float) -> bool:
    """Wait until ``event`` is set, but stop as soon as ``process`` has died (no hang).

    Returns whether the event was set; ``process.exitcode`` then says how a dead child ended.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event.wait(0.2):
            return True
        if not process.is_alive():
            return bool(event.is_set())
    return bool(event.is_set())


def _context() -> mp.context.ForkServerContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["hooklab.testing.store_stress"])
    return ctx


def _writer(root: str, numel: int, log_path: str, seed: int, saves: int,
            ready: Any = None, halt: tuple[str, int, Any] | None = None) -> None:
    """Child: save ``saves`` runs (forever if 0), appending each committed id to ``log_path``;
    with ``halt = (point, nth, event)`` the ``nth`` save stops at ``point`` to be killed."""
    try:
        store = TraceStore(root)
        if store.cleaned:  # leftovers of the previous (killed) writer
            _append(log_path, f"CLEANED {len(store.cleaned)}\n")
        trace = synthetic_trace(4, numel, seed)
        if ready is not None:
            ready.set()
        i = 0
        with _halting(halt, lambda line: _append(log_path, line + "\n")):
            while saves <= 0 or i < saves:
                trace.meta["save"] = i
                rid = store.save(trace, author="stress", notes=str(i))
                _append(log_path, rid + "\n")
                i += 1
    except BaseException as exc:  # report, then exit non-zero
        _append(log_path, f"ERROR {type(exc).__name__}: {exc}\n")
        raise SystemExit(1) from None


def _append(log_path: str, line: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one small append: atomic
    finally:
        os.close(fd)


def _reported(log_path: Path) -> tuple[list[str], list[str], int]:
    """Committed run ids, error lines, and how many leftover temp dirs writers cleaned."""
    if not log_path.exists():
        return [], [], 0
    lines = log_path.read_text().splitlines()
    ids = [ln for ln in lines if ln and ln.split()[0] not in ("ERROR", "CLEANED", "HALTED")]
    cleaned = sum(int(ln.split()[1]) for ln in lines if ln.startswith("CLEANED "))
    return ids, [ln for ln in lines if ln.startswith("ERROR")], cleaned


def check_store(root: str | os.PathLike[str], reported: list[str]) -> dict[str, int]:
    """Reopen the store and count what matters after a stress run."""
    root = Path(root)
    temp_before = sum(1 for p in root.iterdir() if p.name.startswith(_TMP_PREFIX))
    store = TraceStore(root)
    listing = store.list()
    bad = listing[listing["status"] != "ok"]
    unloadable = 0
    for rid in listing.loc[listing["status"] == "ok", "run_id"]:
        try:
            trace = store.load(rid, verify=True)
            for key in trace.tensor_keys():
                trace.tensor(key)
        except Exception:
            unloadable += 1
    present = set(listing["run_id"])
    return {
        "runs_listed": len(listing),
        "runs_reported": len(reported),
        "runs_lost": sum(1 for r in reported if r not in present),
        "duplicate_ids": len(reported) - len(set(reported)),
        "partial_visible": len(bad),
        "unloadable": unloadable,
        "temp_before_reopen": temp_before,
        "temp_left": sum(1 for p in root.iterdir() if p.name.startswith(_TMP_PREFIX)),
    }


def kill_writers(root: str | os.PathLike[str], kills: int = 10, numel: int = 1 << 20,
                 max_delay: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """Start a writer, SIGKILL it after a random delay; ``kills`` times. Then check the store.

    Returns figures: kills, killed_mid_save (kills that left a temporary directory),
    runs_reported (committed, as told by the writers), runs_lost, partial_visible, unloadable,
    temp_before_reopen, temp_left (after reopening), errors.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root.parent / f"{root.name}.writers.log"
    rng = random.Random(seed)
    ctx = _context()
    for k in range(kills):
        ready = ctx.Event()
        p = ctx.Process(target=_writer,
                        args=(str(root), numel, str(log_path), seed + k, 0, ready))
        p.start()
        ready.wait(60.0)
        time.sleep(rng.uniform(0.0, max_delay))
        p.kill()  # SIGKILL
        p.join()
    reported, errors, cleaned = _reported(log_path)
    figures = check_store(root, reported)
    # kills that landed inside a save: its temp dir was found by the next writer or the reopen
    figures["killed_mid_save"] = cleaned + figures["temp_before_reopen"]
    return {"kills": kills, **figures, "errors": len(errors)}


def kill_at_points(root: str | os.PathLike[str], points: list[str] | None = None,
                   numel: int = 4096, seed: int = 0, timeout: float = 600.0) -> dict[str, Any]:
    """For each point (default: every one of :data:`HALT_POINTS`), start a writer whose save
    number ``k % 3`` stops at that point, SIGKILL it there, and record what the kill left.
    Then reopen the store and check it.

    Returns :func:`check_store`'s figures plus kills, errors, cleaned (temp dirs removed by the
    next writers) and ``landed``: per kill the point, the saves committed before it, the files
    in the temporary folder at the kill, and whether that folder was still there after it.

    Raises:
        RuntimeError: a writer did not reach its point within ``timeout`` seconds (a hang).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root.parent / f"{root.name}.writers.log"
    ctx = _context()
    landed = []
    for k, point in enumerate(points if points is not None else list(HALT_POINTS)):
        halted = ctx.Event()
        p = ctx.Process(target=_writer, args=(str(root), numel, str(log_path), seed + k, 0, None,
                                              (point, k % 3, halted)))
        p.start()
        reached = wait_for(halted, p, timeout)
        temp = _halted_dirs(log_path)[-1] if reached else None
        files = sorted(os.listdir(temp)) if temp is not None else []
        p.kill()  # SIGKILL
        p.join()
        if temp is None:
            raise RuntimeError(f"writer {k} did not reach {point} in {timeout:.0f} s")
        landed.append({"point": point, "committed_before": k % 3, "files": files,
                       "temp": temp.name, "temp_after_kill": temp.is_dir()})
    reported, errors, cleaned = _reported(log_path)
    return {"kills": len(landed), **check_store(root, reported), "errors": len(errors),
            "cleaned": cleaned, "landed": landed}


def _halted_dirs(log_path: Path) -> list[Path]:
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    return [Path(ln.split(" ", 2)[2]) for ln in lines if ln.startswith("HALTED ")]


def concurrent_saves(root: str | os.PathLike[str], processes: int = 8, saves: int = 50,
                     numel: int = 4096, timeout: float = 600.0) -> dict[str, Any]:
    """``processes`` writers each save ``saves`` runs into one store at once; check all."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root.parent / f"{root.name}.writers.log"
    ctx = _context()
    procs = [ctx.Process(target=_writer, args=(str(root), numel, str(log_path), i + 1, saves))
             for i in range(processes)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    elapsed = time.perf_counter() - t0
    reported, errors, _ = _reported(log_path)
    return {"processes": processes, "saves_each": saves, "expected": processes * saves,
            "failed_writers": sum(1 for p in procs if p.exitcode != 0), "errors": len(errors),
            "first_error": errors[0] if errors else "", "seconds": round(elapsed, 2),
            **check_store(root, reported)}


def measure_save_throughput(trace: Trace, directory: str | os.PathLike[str], repeats: int = 3,
                            durable: bool = True) -> dict[str, float]:
    """Time :meth:`TraceStore.save` against a raw write of the same bytes (best of ``repeats``).

    The raw baseline writes the saved run's three files, already serialised in memory, to one
    new file (fsynced too when ``durable``). ``ratio`` = save throughput / raw throughput.
    """
    directory = Path(directory)
    store = TraceStore(directory / "store", durable=durable)
    save_times, raw_times = [], []
    rid = ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        rid = store.save(trace, author="bench")
        save_times.append(time.perf_counter() - t0)
    blobs = [p.read_bytes() for p in sorted((store.root / rid).iterdir())]
    nbytes = sum(len(b) for b in blobs)
    for i in range(repeats):
        path = directory / f"raw-{i}.bin"
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            for b in blobs:
                f.write(b)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        raw_times.append(time.perf_counter() - t0)
        path.unlink()
    save_s, raw_s = min(save_times), min(raw_times)
    return {"bytes": nbytes, "save_s": save_s, "raw_s": raw_s,
            "save_MBps": nbytes / save_s / 2**20, "raw_MBps": nbytes / raw_s / 2**20,
            "ratio": raw_s / save_s}
