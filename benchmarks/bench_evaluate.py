"""Dataset-wide evaluation in-process vs on a local Ray, in one run.

Grad-CAM at the SimpleCNN's CAM layer (shipped shapes weights) scored by deletion and insertion
(32 steps) over ``--n`` shapes images (default 2,000), chunks of ``--batch-size`` images:

  in-process, 1 thread       one scorer, the baseline of the per-image cost
  in-process, 2 threads      the same, torch using both cores
  Ray, 2 workers x 1 thread  Ray Data map_batches on an actor pool (each actor builds the model
                             and the data source once); the driver writes the store

Ray is started once before the timings (``ray_session("local", num_cpus=2)``): what is timed
is what a user on a running cluster waits for, the actor pool's start included. Every variant
writes its own run into a temporary store (``resume=False``). Goal: Ray's overhead under 20 %,
i.e. Ray with 2 workers takes at most 1.2 x the ideal (the 1-thread in-process time / 2) and at
most 1.2 x the 2-thread in-process run. The rows of the Ray run are checked equal to the
1-thread in-process rows. The driver's resident memory is sampled after every chunk of the Ray
run: its growth from the first quarter to the end is printed (goal: flat, under 50 MB).

Usage: .venv/bin/python benchmarks/bench_evaluate.py [--n 2000] [--batch-size 50] [--repeats 1]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import machine_line, rss  # noqa: E402  (benchmarks/_machine.py)

from hooklab.studies.cluster import ray_session  # noqa: E402
from hooklab.studies.evaluation import evaluate  # noqa: E402

KEY = ["index", "method", "layer"]




def _run(args: argparse.Namespace, root: Path, ray: str | None, threads: int,
         progress: Callable[[int, int], None] | None = None) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    res = evaluate("simple_cnn", "shapes", n=args.n, batch_size=args.batch_size,
                   methods=["gradcam"], metrics=["deletion", "insertion"], steps=32,
                   store=root, ray=ray, workers=2 if ray else None, threads=threads,
                   resume=False, progress=progress)
    return time.perf_counter() - start, res.per_image.sort_values(KEY).reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of the three variants; each variant's best time is kept")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(machine_line())
    print(f"Grad-CAM + deletion/insertion (32 steps), simple_cnn, {args.n} shapes images, "
          f"chunks of {args.batch_size}")
    best: dict[str, float] = {}
    samples: list[int] = []
    rows: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp, ray_session("local", num_cpus=2):
        # warm-up: imports, the shipped weights and one actor pool, outside the timings
        _run(argparse.Namespace(n=100, batch_size=args.batch_size), Path(tmp) / "warm",
             "local", 1)
        for r in range(args.repeats):
            for name, ray, threads in (("in-process, 1 thread", None, 1),
                                       ("in-process, 2 threads", None, 2),
                                       ("Ray, 2 workers x 1 thread", "local", 1)):
                track = (lambda d, t: samples.append(rss())) if ray else None
                if ray:
                    samples.clear()
                secs, rows[name] = _run(args, Path(tmp) / f"{r}-{threads}-{ray}", ray, threads,
                                        track)
                best[name] = min(best.get(name, float("inf")), secs)
                print(f"  round {r + 1}: {name:<27} {secs:7.1f} s", flush=True)
    print(f"\n{'variant':<27} {'seconds':>8} {'images/s':>9}")
    for name, secs in best.items():
        print(f"{name:<27} {secs:8.1f} {args.n / secs:9.1f}")
    one, two, on_ray = (best["in-process, 1 thread"], best["in-process, 2 threads"],
                        best["Ray, 2 workers x 1 thread"])
    ideal = one / 2
    print(f"\nRay 2 workers / ideal (1-thread time / 2): {on_ray / ideal:.3f} x  "
          f"(goal <= 1.20: overhead {100 * (on_ray / ideal - 1):+.1f} %)")
    print(f"Ray 2 workers / in-process 2 threads:      {on_ray / two:.3f} x  (goal <= 1.20)")
    same = rows["Ray, 2 workers x 1 thread"].equals(rows["in-process, 1 thread"])
    print(f"Ray rows equal the in-process rows: {same}")
    print(f"per-image cost, in-process 1 thread: {1000 * one / args.n:.2f} ms")
    if len(samples) >= 4:
        first, quarter, last = samples[0], samples[len(samples) // 4], samples[-1]
        print(f"driver RSS over the Ray run: {first / 2**20:.0f} MB at the start, "
              f"{quarter / 2**20:.0f} MB at a quarter, {last / 2**20:.0f} MB at the end "
              f"(growth {(last - quarter) / 2**20:+.1f} MB; goal flat, < 50 MB)")


if __name__ == "__main__":
    main()
