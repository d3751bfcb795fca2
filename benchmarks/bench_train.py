"""Training and weight-loading time: a training, the cached copy, the shipped default.

Was a wall-clock assertion in ``tests/test_train.py`` (the second ``trained_model`` call must
read the cache: < 2 s and < 1/5 of the training); timings belong here. Prints the seconds of a
training of ``--steps`` steps (into a temporary cache), of reading it back from the cache, and of
loading the shipped default (sha256 check included), with the ratios over the training.

Usage: ``python benchmarks/bench_train.py [--steps 150] [--threads K]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _machine import machine_line  # noqa: E402

from hooklab.studies import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="training steps (default: 150)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    config = train.TrainConfig(steps=args.steps, seed=12345)  # not a shipped configuration
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[train.CACHE_ENV] = tmp
        t0 = time.perf_counter()
        train.trained_model(config)
        trained = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = train.trained_model(config)
        cached = time.perf_counter() - t0
        assert again.hooklab_train["cached"], "the second call did not read the cache"
    t0 = time.perf_counter()
    shipped = train.trained_model()
    loaded = time.perf_counter() - t0
    assert "shipped" in shipped.hooklab_train
    print(f"{'step':<40} {'seconds':>9} {'ratio':>7}")
    print(f"{f'train {args.steps} steps (default recipe)':<40} {trained:>9.2f} {1.0:>7.3f}")
    print(f"{'read it back from the cache':<40} {cached:>9.3f} {cached / trained:>7.3f}")
    print(f"{'load the shipped default (sha256 check)':<40} {loaded:>9.3f} {loaded / trained:>7.3f}")


if __name__ == "__main__":
    main()
