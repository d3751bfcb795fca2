"""Peak resident memory of recording every leaf under a byte budget, against the same
forward+backward without recording.

ResNet-50 (random weights), batch 32, 224 px, CPU, by default. Each variant runs in a fresh
process (so one's peak cannot hide another's) and the peak is Linux's VmHWM, reset with
``/proc/self/clear_refs`` after the model and input are built, so it measures the pass itself:

  plain     model(x), backward of each sample's predicted-class logit, no hooks
  budget    the same inside hooklab.record(model) (every leaf module), max_bytes = 256 MB
  stats     the same with keep_tensors=False (statistics only)

Prints one table: peak RSS during the pass, its rise over the RSS before the pass, the excess
over ``plain``, the tensor bytes stored (must be <= the budget), events, seconds.
Usage: .venv/bin/python benchmarks/bench_memory.py [--batch 32] [--size 224] [--budget-mb 256]
       [--model resnet50] [--modes plain budget stats]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine_line, rss, status_bytes  # noqa: E402  (benchmarks/_machine.py)

ROOT = Path(__file__).resolve().parent.parent
MODES = ("plain", "budget", "stats")


def _peak() -> int:
    return status_bytes("VmHWM")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(mode: str, model_name: str, batch: int, size: int, budget: int) -> dict:
    """One variant in this (fresh) process; returns its figures."""
    import warnings

    import torch

    sys.path.insert(0, str(ROOT))
    import hooklab
    from hooklab.models.zoo import get_model
    from hooklab.recording.recorder import scalar_loss

    warnings.filterwarnings("ignore")
    model = get_model(model_name, seed=0)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    before = rss()
    _reset_peak()
    t0 = time.perf_counter()
    out: dict = {"mode": mode}
    if mode == "plain":
        scalar_loss(model(x)).backward()
    else:
        with hooklab.record(model, keep_tensors=(mode == "budget"), max_bytes=budget,
                            inputs=True) as rec:
            rec.run(x)
        tr = rec.trace
        ev = tr.events
        out.update(stored=tr.stored_bytes, truncated=tr.truncated, events=len(ev),
                   with_tensor=int((ev.key != "").sum()), layers=len(rec.layers))
    out.update(seconds=time.perf_counter() - t0, peak=_peak(), before=before)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--budget-mb", type=float, default=256)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    budget = int(args.budget_mb * 2**20)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.batch, args.size, budget)))
        return 0
    print(machine_line(), flush=True)
    rows = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--child", mode, "--model", args.model,
               "--batch", str(args.batch), "--size", str(args.size),
               "--budget-mb", str(args.budget_mb)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  done: {mode} ({rows[-1]['seconds']:.0f} s)", file=sys.stderr, flush=True)
    mb = 2**20
    plain = next((r for r in rows if r["mode"] == "plain"), None)
    print(f"{args.model}, batch {args.batch}, {args.size} px, budget {args.budget_mb:.0f} MB, "
          f"CPU, {os.cpu_count()} CPUs")
    print("| variant | peak RSS (MB) | rise during pass (MB) | over plain (MB) | tensors stored "
          "(MB) | events (with tensor) | seconds |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for r in rows:
        rise = (r["peak"] - r["before"]) / mb
        over = "" if plain is None or r is plain else f"{(r['peak'] - plain['peak']) / mb:+.0f}"
        stored = "" if "stored" not in r else f"{r['stored'] / mb:.1f}" + (
            " (budget reached)" if r["truncated"] else "")
        events = "" if "events" not in r else f"{r['events']} ({r['with_tensor']})"
        print(f"| {r['mode']} | {r['peak'] / mb:.0f} | {rise:.0f} | {over} | {stored} | "
              f"{events} | {r['seconds']:.1f} |")
        if r["mode"] == "budget" and r["stored"] > budget:
            ok = False
    if not ok:
        print("FAILED: stored tensors exceed the budget")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
