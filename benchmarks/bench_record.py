"""Recording overhead and store throughput, measured against baselines in the same process.

Prints four ratios (ResNet-18, random weights, batch 16, 224 px, CPU; goals of issue 12):
  1. statistics-only recording of every leaf module, forward+backward / bare forward+backward
     (goal <= 1.08)
  2. statistics-only recording of a torch.no_grad() forward / the bare no-grad forward
     (goal <= 1.15)
  3. full-tensor recording of every leaf / bare (goal <= 1.20)
  4. TraceStore.save throughput / a raw write of the same tensor bytes, straight from the
     tensors' memory, then fsync (goal >= 0.85). Also printed: the same raw write with the
     kernel's writeback started every 16 MiB, as the store does (the best a writer can do).

Timings interleave the variants and report medians, so a noisy machine shifts all of them alike.
Usage: .venv/bin/python benchmarks/bench_record.py [--repeats N] [--batch B] [--size S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import machine_line  # noqa: E402  (benchmarks/_machine.py)

import hooklab  # noqa: E402
from hooklab.recording.pool import POOL  # noqa: E402
from hooklab.store import format as fmt  # noqa: E402
from hooklab.store.runs import TraceStore  # noqa: E402


def raw_write(path: Path, tensors: dict[str, torch.Tensor], *, early: bool) -> None:
    """The baseline: the tensors' bytes written straight from their memory, then fsync;
    ``early`` starts the kernel's writeback every 16 MiB as TraceStore.save does."""
    with open(path, "wb", buffering=0) as f:
        started = pos = 0
        for t in tensors.values():
            view = fmt._byte_view(t.contiguous())
            for i in range(0, view.nbytes, fmt.WRITEBACK_CHUNK):
                pos += f.write(view[i:i + fmt.WRITEBACK_CHUNK])
                if early and fmt._start_writeback is not None:
                    fmt._start_writeback(f.fileno(), started, pos - started, 2)
                    started = pos
        os.fsync(f.fileno())


def step(model, x, mode):
    model.zero_grad(set_to_none=True)
    if mode in ("nograd", "nograd-stats"):
        with torch.no_grad():
            if mode == "nograd":
                model(x)
                return None
            with hooklab.record(model, keep_tensors=False, max_bytes=None) as rec:
                model(x)
            return rec.trace
    if mode == "bare":
        model(x)[:, 0].sum().backward()
        return None
    with hooklab.record(model, keep_tensors=(mode == "full"), max_bytes=None) as rec:
        model(x)[:, 0].sum().backward()
    return rec.trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    print(machine_line(), flush=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    modes = ("bare", "stats", "full", "nograd", "nograd-stats")
    for m in modes:  # warm-up
        step(model, x, m)
    times: dict[str, list[float]] = {m: [] for m in modes}
    trace = None
    for _ in range(args.repeats):
        for m in modes:
            t0 = time.perf_counter()
            out = step(model, x, m)
            times[m].append(time.perf_counter() - t0)
            if m == "full":
                trace = out
            del out
    med = {m: statistics.median(v) for m, v in times.items()}

    # store throughput vs a raw write of the same bytes
    tensors = trace.tensors()
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        store = TraceStore(Path(tmp) / "store")
        raw_t, early_t, save_t = [], [], []

        def run_raw(i: int) -> None:
            path = Path(tmp) / f"raw{i}.bin"
            t0 = time.perf_counter()
            raw_write(path, tensors, early=False)
            raw_t.append(time.perf_counter() - t0)
            os.remove(path)

        def run_early(i: int) -> None:
            path = Path(tmp) / f"early{i}.bin"
            t0 = time.perf_counter()
            raw_write(path, tensors, early=True)
            early_t.append(time.perf_counter() - t0)
            os.remove(path)

        def run_save(i: int) -> None:
            t0 = time.perf_counter()
            rid = store.save(trace, author="bench")
            save_t.append(time.perf_counter() - t0)
            shutil.rmtree(store.root / rid)

        # the order rotates every round and each output is removed at once, so no variant
        # always writes behind the others' dirty pages or onto a fuller disk
        variants = [run_raw, run_early, run_save]
        for i in range(3 * len(variants)):
            variants[(i + i // len(variants)) % len(variants)](i)
    raw, early, save = (statistics.median(v) for v in (raw_t, early_t, save_t))

    print(f"ResNet-18, batch {args.batch}, {args.size} px, CPU, {torch.get_num_threads()} threads,"
          f" median of {args.repeats}; {len(trace)} events, {nbytes / 2**20:.0f} MiB of tensors")
    print(f"{'measure':<48} {'time':>9} {'ratio':>7} {'goal':>7}")
    print(f"{'bare forward+backward':<48} {med['bare']:>8.3f}s {1.0:>7.2f}")
    print(f"{'stats-only recording of every leaf':<48} {med['stats']:>8.3f}s "
          f"{med['stats'] / med['bare']:>7.2f} {'<=1.08':>7}")
    print(f"{'full-tensor recording of every leaf':<48} {med['full']:>8.3f}s "
          f"{med['full'] / med['bare']:>7.2f} {'<=1.20':>7}")
    print(f"{'no-grad forward':<48} {med['nograd']:>8.3f}s {1.0:>7.2f}")
    print(f"{'stats-only recording of a no-grad forward':<48} {med['nograd-stats']:>8.3f}s "
          f"{med['nograd-stats'] / med['nograd']:>7.2f} {'<=1.15':>7}")
    print(f"{'raw write of the tensor bytes + fsync':<48} {raw:>8.3f}s "
          f"{nbytes / raw / 2**20:>6.0f}M/s")
    print(f"{'  the same, writeback started every 16 MiB':<48} {early:>8.3f}s "
          f"{nbytes / early / 2**20:>6.0f}M/s")
    print(f"{'TraceStore.save (throughput ratio raw/save)':<48} {save:>8.3f}s "
          f"{raw / save:>7.2f} {'>=0.85':>7}")
    print(f"{'  buffers reused by the recorder (pool)':<48} {POOL.reused:>9d}")

if __name__ == "__main__":
    main()
