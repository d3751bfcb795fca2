"""Reliability figures: the long versions of the issue-5 checks, one table.

1. 1,000 recordings with a fault injected at a random point (inside forward, inside backward,
   inside an edit, inside saving): hooks leaked, flags changed, runs lost, partial runs.
2. Memory soak: resident memory over 200 repeated recordings (with saves) after a warm-up.
3. A store writer SIGKILLed at random moments, 100 times (synthetic runs of 4 x 4 MB).
4. A recording writer (record SimpleCNN, save) SIGKILLed at random moments, 20 times.
5. 8 processes x 50 saves into one store.
6. 8 threads recording on one shared model at once and saving into one store, faults in some.

Every figure is counted, not assumed; the script exits 1 if a leak, a lost run, a partial run or
an unexpected outcome was seen, or memory grew 5 % or more. Takes about 5-10 minutes on 2 cores.
Usage: .venv/bin/python benchmarks/reliability.py [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import machine_line  # noqa: E402  (benchmarks/_machine.py)

import hooklab  # noqa: E402
from hooklab.core.errors import StoreError  # noqa: E402
from hooklab.models.zoo import SimpleCNN  # noqa: E402
from hooklab.recording.recorder import EditSpec  # noqa: E402
from hooklab.store.runs import TraceStore  # noqa: E402
from hooklab.testing import faults  # noqa: E402
from hooklab.testing.faults import InjectedFault, inject  # noqa: E402
from hooklab.testing.store_stress import check_store, concurrent_saves, kill_writers  # noqa: E402

COLUMNS = ("check", "attempts", "failures injected", "hooks leaked", "runs lost",
           "partial runs visible", "memory growth", "seconds", "notes")


def _store_figures(store: TraceStore, committed: list[str]) -> tuple[int, int, int]:
    """(runs lost, partial runs visible, unloadable) after reopening the store."""
    reopened = TraceStore(store.root, durable=False)
    listing = reopened.list()
    present = set(listing["run_id"])
    lost = sum(1 for r in committed if r not in present)
    partial = int((listing["status"] != "ok").sum())
    partial += sum(1 for p in reopened.root.iterdir() if p.name.startswith(".tmp"))
    unloadable = 0
    for rid in listing.loc[listing["status"] == "ok", "run_id"]:
        try:
            reopened.verify(rid)
        except Exception:  # noqa: BLE001 - counted
            unloadable += 1
    return lost, partial, unloadable


def check_faults(work: Path, n: int) -> dict:
    torch.manual_seed(0)
    model = faults.TinyNet()
    model.train()
    model.bn1.eval()
    model.conv1.weight.requires_grad_(False)
    user = model.conv2.register_forward_hook(lambda m, a, o: None)  # a user's own hook stays
    store = TraceStore(work / "faults", durable=False)
    x = torch.randn(2, 3, 16, 16)
    before = [p.detach().clone() for p in model.parameters()]
    t0 = time.perf_counter()
    fig = faults.campaign(model, x, n, store, seed=2026)
    seconds = time.perf_counter() - t0
    user_kept = len(model.conv2._forward_hooks) == 1
    user.remove()
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    lost, partial, unloadable = _store_figures(store, fig["saved"])
    pts = fig["per_point"]
    notes = (f"forward {pts['forward']}, backward {pts['backward']}, edit {pts['edit']}, "
             f"save {pts['save']}; {fig['refused']} refused hook kinds; "
             f"{len(fig['saved'])} runs saved; flags changed {fig['flags_changed']}; "
             f"unexpected {len(fig['unexpected'])}")
    bad = (fig["unexpected"] or fig["flags_changed"] or not user_kept or changed or unloadable)
    if fig["unexpected"]:
        notes += f" (first: {fig['unexpected'][0]})"
    return {"check": f"faults in forward/backward/edit/save ({n} recordings)",
            "attempts": fig["attempts"], "failures injected": fig["injected"],
            "hooks leaked": fig["hooks_leaked"], "runs lost": lost,
            "partial runs visible": partial, "memory growth": "", "seconds": seconds,
            "notes": notes, "bad": bool(bad)}


def check_memory(work: Path, n: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    store = TraceStore(work / "soak", durable=False)
    x = torch.randn(8, 3, 32, 32)
    proc = psutil.Process()
    injected = 0
    t0 = time.perf_counter()
    start = 0
    for i in range(n):
        if i == warmup:
            gc.collect()
            start = proc.memory_info().rss
        point = faults.POINTS[i % 4]
        with inject(point, 3 if i % 5 == 0 else 10**6) as fault:
            try:
                with hooklab.record(model, param_grads=True,
                                    edits=[EditSpec("conv2", fault.edit)]) as rec:
                    rec.run(x)
                    if i % 4 == 3:
                        store.save(rec.trace)
            except (InjectedFault, StoreError):
                injected += 1
        if i % 4 == 3:
            for rid in store.run_ids():
                store.delete(rid)
                store.purge(rid)
    gc.collect()
    growth = (proc.memory_info().rss - start) / start
    leaked = faults.leaked_hooks(faults.module_state(SimpleCNN()), faults.module_state(model))
    return {"check": f"memory soak ({n} recordings, SimpleCNN batch 8, after {warmup} warm-up)",
            "attempts": n, "failures injected": injected, "hooks leaked": leaked,
            "runs lost": "", "partial runs visible": "", "memory growth": f"{growth:+.2%}",
            "seconds": time.perf_counter() - t0,
            "notes": f"RSS {start / 2**20:.0f} MB after warm-up",
            "bad": growth >= 0.05 or leaked > 0}


def check_kill_store_writers(work: Path, kills: int) -> dict:
    t0 = time.perf_counter()
    f = kill_writers(work / "killed", kills=kills, numel=1 << 20, max_delay=1.0, seed=5)
    return {"check": f"store writer SIGKILLed at random moments ({kills} kills)",
            "attempts": f["kills"], "failures injected": f["kills"], "hooks leaked": "",
            "runs lost": f["runs_lost"], "partial runs visible": f["partial_visible"],
            "memory growth": "", "seconds": time.perf_counter() - t0,
            "notes": (f"{f['killed_mid_save']} kills mid-save; {f['runs_reported']} runs "
                      f"committed, {f['runs_listed']} listed; {f['unloadable']} unloadable; "
                      f"{f['temp_before_reopen']} temp dirs before reopen, {f['temp_left']} after"),
            "bad": bool(f["runs_lost"] or f["partial_visible"] or f["unloadable"]
                        or f["temp_left"] or f["errors"])}


def check_kill_recording_writers(work: Path, kills: int) -> dict:
    root, log = work / "killed-rec", work / "killed-rec.log"
    TraceStore(root)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["hooklab.testing.faults", "hooklab.recording.recorder", "hooklab.store.runs",
                                "hooklab.models.zoo"])
    rng = random.Random(11)
    t0 = time.perf_counter()
    for k in range(kills):
        ready = ctx.Event()
        p = ctx.Process(target=faults.recording_writer, args=(str(root), str(log), k, 0, ready))
        p.start()
        ready.wait(120)
        time.sleep(rng.uniform(0.0, 1.5))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    lines = log.read_text().splitlines() if log.exists() else []
    reported = [ln for ln in lines if ln and not ln.startswith(("ERROR", "CLEANED"))]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    cleaned = sum(int(ln.split()[1]) for ln in lines if ln.startswith("CLEANED"))
    f = check_store(root, reported)
    return {"check": f"recording writer SIGKILLed at random moments ({kills} kills)",
            "attempts": kills, "failures injected": kills, "hooks leaked": "",
            "runs lost": f["runs_lost"], "partial runs visible": f["partial_visible"],
            "memory growth": "", "seconds": time.perf_counter() - t0,
            "notes": (f"{cleaned + f['temp_before_reopen']} kills mid-save; "
                      f"{len(reported)} runs committed; {f['unloadable']} unloadable; "
                      f"{f['temp_before_reopen']} temp dirs before reopen, {f['temp_left']} "
                      f"after; writer errors {len(errors)}"),
            "bad": bool(f["runs_lost"] or f["partial_visible"] or f["unloadable"]
                        or f["temp_left"] or errors)}


def check_processes(work: Path, processes: int, saves: int) -> dict:
    t0 = time.perf_counter()
    f = concurrent_saves(work / "shared", processes=processes, saves=saves)
    return {"check": f"{processes} processes x {saves} saves into one store",
            "attempts": f["expected"], "failures injected": 0, "hooks leaked": "",
            "runs lost": f["expected"] - f["runs_listed"] + f["runs_lost"],
            "partial runs visible": f["partial_visible"], "memory growth": "",
            "seconds": time.perf_counter() - t0,
            "notes": (f"{f['runs_listed']} runs listed, {f['unloadable']} unloadable, "
                      f"{f['duplicate_ids']} duplicate ids, {f['failed_writers']} failed writers"),
            "bad": bool(f["runs_listed"] != f["expected"] or f["runs_lost"] or f["unloadable"]
                        or f["partial_visible"] or f["failed_writers"])}


def check_threads(work: Path, threads: int, reps: int) -> dict:
    """``threads`` threads share one SimpleCNN and one store; each records ``reps`` times on its
    own constant input and saves; every 4th recording of every other thread hits a fault."""
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    store = TraceStore(work / "threads", durable=False)
    before = faults.module_state(model)
    inputs = [torch.full((1, 3, 32, 32), float(i)) for i in range(threads)]
    ref = {}
    for i, x in enumerate(inputs):  # reference gradients: plain autograd, one thread
        act = {}
        h = model.conv2.register_forward_hook(lambda m, a, o, act=act: act.setdefault("o", o))
        try:
            loss = model(x)[:, i % 10].sum()
        finally:
            h.remove()
        ref[i] = torch.autograd.grad(loss, act["o"])[0]
    saved: dict[str, int] = {}
    problems: list[str] = []
    counts = {"injected": 0, "foreign": 0, "wrong_grad": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work_fn(i: int) -> None:
        try:
            barrier.wait()
            for r in range(reps):
                point = faults.POINTS[(i + r) % 4] if (i % 2 and r % 4 == 1) else "edit"
                nth = 2 if (i % 2 and r % 4 == 1) else -1
                with inject(point, nth) as fault:
                    try:
                        with hooklab.record(model, ["conv1", "conv2"], meta={"thread": i},
                                            edits=[EditSpec("fc1", fault.edit)]) as rec:
                            rec.run(inputs[i], target=i % 10, zero_grad=False)
                            rid = store.save(rec.trace)
                    except (InjectedFault, StoreError):
                        with lock:
                            counts["injected"] += 1
                        continue
                ev = rec.trace.events
                first_in = ev[(ev.role == "input") & (ev.layer == "conv1")]
                with lock:
                    saved[rid] = i
                    # one conv1 input, this thread's, and one event of each kind per layer
                    if list(first_in["mean"]) != [float(i)] or list(first_in["std"]) != [0.0] \
                            or len(ev) != len(ev.drop_duplicates(["layer", "role", "index"])):
                        counts["foreign"] += 1
                    g = rec.trace.find(layer="conv2", role="grad_output")
                    if not torch.allclose(g, ref[i], rtol=1e-5, atol=1e-7):
                        counts["wrong_grad"] += 1
        except BaseException as exc:  # noqa: BLE001
            with lock:
                problems.append(f"thread {i}: {type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work_fn, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    seconds = time.perf_counter() - t0
    leaked = faults.leaked_hooks(before, faults.module_state(model))
    lost, partial, unloadable = _store_figures(store, list(saved))
    for rid, i in list(saved.items())[:50]:
        if store.load(rid).meta.get("thread") != i:
            counts["foreign"] += 1
    return {"check": f"{threads} threads recording on one shared model ({reps} each)",
            "attempts": threads * reps, "failures injected": counts["injected"],
            "hooks leaked": leaked, "runs lost": lost, "partial runs visible": partial,
            "memory growth": "", "seconds": seconds,
            "notes": (f"traces with foreign events {counts['foreign']}, wrong gradients "
                      f"{counts['wrong_grad']}, unloadable {unloadable}, errors {len(problems)}"
                      + (f" ({problems[0]})" if problems else "")),
            "bad": bool(leaked or lost or partial or unloadable or problems
                        or counts["foreign"] or counts["wrong_grad"])}


def table(rows: list[dict]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (for trying the script)")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # the deprecated backward hook
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    torch.set_num_threads(1)  # the checks are about correctness; threads only add contention
    print(machine_line(), flush=True)
    work = Path(args.keep or tempfile.mkdtemp(prefix="hooklab-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    q = args.quick
    t0 = time.perf_counter()
    rows = []
    try:
        steps = [
            lambda: check_faults(work, 60 if q else 1000),
            lambda: check_memory(work, 40 if q else 200, 10 if q else 20),
            lambda: check_kill_store_writers(work, 5 if q else 100),
            lambda: check_kill_recording_writers(work, 3 if q else 20),
            lambda: check_processes(work, 4 if q else 8, 5 if q else 50),
            lambda: check_threads(work, 8, 5 if q else 25),
        ]
        for step in steps:
            rows.append(step())
            print(f"  done: {rows[-1]['check']} ({rows[-1]['seconds']:.0f} s)", file=sys.stderr,
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"hooklab {hooklab.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"total {time.perf_counter() - t0:.0f} s")
    print(table(rows))
    bad = [r["check"] for r in rows if r["bad"]]
    if bad:
        print("FAILED: " + "; ".join(bad))
        return 1
    print("OK: no hook leaked, no run lost, no partial run visible, memory flat.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
