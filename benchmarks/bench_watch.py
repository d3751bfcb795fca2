"""Cost of ``hooklab.watch`` on a training loop, measured against a bare training step in the
same process, beside TensorBoard's and wandb's "log everything" (printed when installed).

ResNet-18 (torchvision, random weights), batch 16, 112 px, SGD, CPU; the watch records every
leaf module's outputs and output gradients plus every parameter gradient (statistics), the
update ratio of every parameter and the dead-unit fraction of every leaf:

  watch(every=1)      every step recorded                           goal <= 1.10 x bare
  watch(every=50)     one step in 50 recorded, the others hook-free goal <= 1.01 x bare
  TensorBoard         SummaryWriter.add_histogram of every parameter and gradient, each step
  wandb               wandb.watch(model, log="all", log_freq=1), offline (WANDB_MODE=offline)

Each variant trains its own copy of the model (same weights) in blocks of ``--block`` steps
(default 50, so an every=50 block holds exactly one recorded step); the variants' blocks are
interleaved (in an order rotated every round) and each variant's per-step time is the minimum
(also printed: the median) over ``--repeats`` blocks: the block least disturbed by other load
on the machine. The "paired" column is the median over rounds of a variant's block time over
the bare block of the same round: blocks of one round run one after another, so a slow spell of
a shared machine slows both. It is the figure the every=1 goal is judged on ("verdict"): the min of
blocks compares two extreme draws (one lucky bare block moves it by several per cent on a busy
2-core machine), the median of each variant's blocks ignores which blocks ran together.
every=50's goal is judged "from its parts", ``1 + (paired every=1 - 1)/50 + w.step / bare``:
its one recorded step in 50 costs what an every=1 step costs over bare, and every step's
``w.step`` (timed inside the loop) is added; an upper bound free of that noise, which is larger
than the 0.3 % being measured. Every watch writes its run into a temporary store (segments
fsynced, as in real use).

``--read-steps N`` also times reading a synthetic streamed run of N steps x 50 layers
(output, grad_output and param_grad events; loss/update-ratio scalars) with
``TraceStore.watch_run``: all columns, and the few a heatmap needs.

Usage: .venv/bin/python benchmarks/bench_watch.py [--repeats N] [--block S] [--read-steps N]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _machine import machine_line  # noqa: E402  (benchmarks/_machine.py)

import hooklab  # noqa: E402
from hooklab.store.runs import TraceStore  # noqa: E402


class Variant:
    """One way of training: its own model copy, optimizer and per-step extra work."""

    def __init__(self, name: str, model: torch.nn.Module, goal: str = "") -> None:
        self.name = name
        self.model = model
        self.goal = goal
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.after: Callable[[int, float], None] = lambda step, loss: None
        self.steps = 0
        self.times: list[float] = []
        self.after_s = 0.0  # time spent in `after` (w.step) during the timed blocks
        self.timing = False

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        value = loss.item()
        t0 = time.perf_counter()
        self.after(self.steps, value)
        if self.timing:
            self.after_s += time.perf_counter() - t0
        self.steps += 1


def tensorboard_after(v: Variant, logdir: str) -> Callable[[], None]:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(logdir)
    params = list(v.model.named_parameters())

    def after(step: int, loss: float) -> None:
        writer.add_scalar("loss", loss, step)
        for name, p in params:
            writer.add_histogram(name, p, step)
            writer.add_histogram(f"{name}.grad", p.grad, step)
    v.after = after
    return writer.close


def wandb_after(v: Variant, wandb_dir: str) -> Callable[[], None]:
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_DIR"] = wandb_dir
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(project="hooklab-bench", dir=wandb_dir, mode="offline")
    wandb.watch(v.model, log="all", log_freq=1)

    def after(step: int, loss: float) -> None:
        run.log({"loss": loss}, step=step)
    v.after = after
    return run.finish


def bench_training(args: argparse.Namespace, tmp: Path) -> None:
    torch.manual_seed(0)
    base = torchvision.models.resnet18(weights=None).train()
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch,))
    store = TraceStore(tmp / "store")
    variants = [Variant("bare training step", copy.deepcopy(base))]
    closers: list[Callable[[], None]] = []
    watchers = []
    with contextlib.ExitStack() as stack:
        for every, goal in ((1, "<=1.10"), (50, "<=1.01")):
            v = Variant(f"hooklab.watch(every={every})", copy.deepcopy(base), goal)
            w = stack.enter_context(hooklab.watch(v.model, store, every=every))
            v.after = lambda step, loss, w=w: w.step(loss=loss)
            variants.append(v)
            watchers.append(w)
        if importlib.util.find_spec("tensorboard") is not None:
            v = Variant("TensorBoard add_histogram, every step", copy.deepcopy(base))
            closers.append(tensorboard_after(v, str(tmp / "tb")))
            variants.append(v)
        else:
            print("(TensorBoard not installed: skipped)")
        if importlib.util.find_spec("wandb") is not None:
            v = Variant('wandb.watch(log="all", log_freq=1), offline', copy.deepcopy(base))
            closers.append(wandb_after(v, str(tmp / "wandb")))
            variants.append(v)
        else:
            print("(wandb not installed: skipped)")
        for v in variants:  # warm-up: every=50's recorded step 0 happens here
            for _ in range(2):
                v.step(x, y)
        for r in range(args.repeats):
            # rotate the order: a block right after another (wandb's service process still
            # busy, say) is not always the same variant's
            for v in variants[r % len(variants):] + variants[:r % len(variants)]:
                v.timing = True
                t0 = time.perf_counter()
                for _ in range(args.block):
                    v.step(x, y)
                v.times.append((time.perf_counter() - t0) / args.block)
        for close in closers:
            close()
    bare = min(variants[0].times)
    bare_med = statistics.median(variants[0].times)
    print(f"ResNet-18, batch {args.batch}, {args.size} px, SGD, CPU, {torch.get_num_threads()} "
          f"threads; min (and median) of {args.repeats} blocks of {args.block} steps per "
          "variant")
    for w in watchers:
        run = store.watch_run(w.run_id, columns=["step"])
        print(f"  watch(every={w.every}): {len(run.steps)} recorded steps, "
              f"{len(run.events)} events, {run.segments} segments, "
              f"{len(w.layers)} layers; status {run.status}")
    print(f"{'measure':<50} {'s/step':>8} {'min ratio':>9} {'median ratio':>13} "
          f"{'paired':>7} {'goal':>7}  verdict (paired)")
    # each round's block against the bare block of the same round (adjacent in time: a slow
    # spell of the machine slows both), median over rounds
    paired = [statistics.median(t / b for t, b in zip(v.times, variants[0].times, strict=True))
              for v in variants]
    for v, p in zip(variants, paired, strict=True):
        best, med = min(v.times), statistics.median(v.times)
        # every=50's effect (~0.3 %) is far below the block-to-block noise of a shared
        # machine (a few per cent): its goal is judged from its parts, printed below
        verdict = "judged from its parts" if v is variants[2] else _verdict(p, v.goal)
        print(f"{v.name:<50} {best:>8.4f} {best / bare:>9.3f} {med / bare_med:>13.3f} "
              f"{p:>7.3f} {v.goal:>7}  {verdict}")
    # every=50 from its parts, free of the block-to-block noise: the hooks of its one recorded
    # step in 50 cost what every=1's steps cost over bare (paired ratio - 1, an upper bound:
    # it includes w.step), and every step spends its w.step time (timed inside the loop)
    r1 = paired[1]
    w50 = variants[2].after_s / (args.block * args.repeats)
    parts = 1 + (r1 - 1) / 50 + w50 / bare_med
    print(f"{'  every=50 from its parts: 1 + (paired every=1 - 1)/50':<50} "
          f"{'':>8} {'':>9} {'':>13} {parts:>7.3f} {'<=1.01':>7}  {_verdict(parts, '<=1.01')}"
          f"   (w.step {w50 * 1e3:.2f} ms/step)")
    if args.block % 50:
        # a block then need not hold a recorded step of every=50: amortise it explicitly
        rec, free = min(variants[1].times), min(variants[2].times)
        amortised = (rec + 49 * free) / 50
        print(f"{'  every=50 amortised: (every=1 + 49 x every=50)/50':<50} "
              f"{amortised:>8.4f} {amortised / bare:>9.3f} {'':>13} {'':>7} {'<=1.01':>7}  "
              f"{_verdict(amortised / bare, '<=1.01')} (min of blocks)")


def _verdict(ratio: float, goal: str) -> str:
    """Whether ``ratio`` meets a goal written ``<=1.10``: "met", "NOT met" ("" for none)."""
    if not goal:
        return ""
    return "met" if ratio <= float(goal.removeprefix("<=")) else "NOT met"


def bench_reading(steps: int, tmp: Path) -> None:
    """Write a synthetic streamed run of ``steps`` x 50 layers and time reading it."""
    import pandas as pd

    from hooklab.core.trace import EVENT_COLUMNS
    from hooklab.recording.watch import Segment
    from hooklab.store.stream import StreamWriter

    store = TraceStore(tmp / "read-store", durable=False)
    writer = StreamWriter(store, "synthetic", tags=["bench"])
    layers = [f"layer{i}.conv" for i in range(50)]
    writer.open({"model": "synthetic", "layers": layers, "every": 1, "page": "training"})
    per_seg = 50
    seq = 0
    t0 = time.perf_counter()
    for first in range(0, steps, per_seg):
        rows = []
        scal = []
        for s in range(first, min(first + per_seg, steps)):
            for role in ("output", "grad_output", "param_grad"):
                for layer in layers:
                    rows.append((seq, s, "forward" if role == "output" else "backward",
                                 "forward" if role == "output" else "tensor", layer, 0, role,
                                 "weight" if role == "param_grad" else "0", "", "16x64x8x8",
                                 "torch.float32", "cpu", 65536, 0.0, 1.0, -3.0, 3.0, 256.0 + s,
                                 0.0, 0, 0, ""))
                    seq += 1
            scal.append((s, "loss", 1.0 / (s + 1)))
            scal += [(s, f"update_ratio/{layer}.weight", 1e-3) for layer in layers]
        ev = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
        sc = pd.DataFrame(scal, columns=["step", "name", "value"])
        writer.write_segment(Segment(steps=list(range(first, min(first + per_seg, steps))),
                                     events=ev, scalars=sc, steps_done=first + per_seg))
    writer.close("finished", "", steps)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = store.watch_run("synthetic")
    all_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    few = store.watch_run("synthetic", columns=["step", "layer", "role", "norm"])
    few_s = time.perf_counter() - t0
    print(f"reading a streamed run of {steps} steps x 50 layers ({len(run.events)} events, "
          f"{len(run.scalars)} scalars, {run.segments} segments; written in {write_s:.1f} s):")
    print(f"  watch_run, all columns:                      {all_s:>6.2f} s")
    print(f"  watch_run, columns step/layer/role/norm:     {few_s:>6.2f} s "
          f"({len(few.events)} rows)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--read-steps", type=int, default=0)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: torch's own; 1 is steadier on a busy machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        if not args.skip_training:
            bench_training(args, Path(tmp))
        if args.read_steps:
            bench_reading(args.read_steps, Path(tmp))


if __name__ == "__main__":
    main()
