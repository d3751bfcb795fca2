"""Training page on a long run: read it from the store, build every figure, count what is sent.

A synthetic streamed run of ``--steps`` steps x ``--layers`` layers (per step and layer one
output, one output gradient and two parameter gradients: 4 events; plus ``loss``, ``acc``, an
update ratio per parameter and a dead fraction per layer), written through the store's stream
writer in segments of 500 steps, like ``hooklab.watch`` writes. Then, in this process:

* read: :func:`hooklab.studies.training_views.open_training` (what the page caches per version);
* figures: every figure the Training page builds for one run (heatmap, curves, update ratios,
  dead units) and the two-run ratio (the run against itself);
* baseline: the obvious pandas table for the heatmap alone (``pivot_table`` of the squared norms
  over string layer names), the ratio says how much cheaper the page's tables are;
* values: how many numbers the figures send to the browser (z cells + line points).

Usage: ``python benchmarks/bench_training_views.py [--steps 10000] [--layers 50]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _machine import machine_line  # noqa: E402

from hooklab.charts import training as charts  # noqa: E402
from hooklab.core.trace import EVENT_COLUMNS  # noqa: E402
from hooklab.recording.watch import Segment  # noqa: E402
from hooklab.store.runs import TraceStore  # noqa: E402
from hooklab.store.stream import StreamWriter  # noqa: E402
from hooklab.studies import training_runs as tr  # noqa: E402
from hooklab.studies import training_views as tv  # noqa: E402

ROLES = [("output", "0"), ("grad_output", "0"), ("param_grad", "weight"), ("param_grad", "bias")]


def segment(steps: np.ndarray, layers: list[str], rng: np.random.Generator) -> Segment:
    per = len(layers) * len(ROLES)
    n = len(steps) * per
    layer = np.tile(np.repeat(layers, len(ROLES)), len(steps))
    ev = pd.DataFrame({c: "" for c in EVENT_COLUMNS}, index=range(n))
    ev["seq"] = steps.repeat(per) * per + np.tile(np.arange(per), len(steps))
    ev["step"] = steps.repeat(per)
    ev["layer"] = layer
    ev["role"] = np.tile([r for r, _ in ROLES] * len(layers), len(steps))
    ev["index"] = np.tile([i for _, i in ROLES] * len(layers), len(steps))
    ev["phase"] = np.where(ev["role"] == "output", "forward", "backward")
    ev["kind"] = "forward"
    for c in ("call", "numel", "nan_count", "inf_count"):
        ev[c] = 0
    for c in ("mean", "std", "min", "max", "zero_frac"):
        ev[c] = 0.0
    ev["norm"] = rng.uniform(0.01, 10.0, n)
    names = (["loss", "acc"] + [f"update_ratio/{x}.{p}" for x in layers for p in ("weight", "bias")]
             + [f"dead_frac/{x}" for x in layers])
    sc = pd.DataFrame({"step": steps.repeat(len(names)), "name": np.tile(names, len(steps)),
                       "value": rng.uniform(0, 1, len(steps) * len(names))})
    return Segment(steps=[int(s) for s in steps], events=ev, scalars=sc,
                   steps_done=int(steps[-1]) + 1)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=50)
    args = ap.parse_args()
    print(machine_line(), flush=True)
    layers = [f"block{i}.conv" for i in range(args.layers)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = TraceStore(tmp, durable=False)
        writer = StreamWriter(store, "20260101-000000-benchrun", author="bench")
        writer.open({"model": "synthetic", "page": "training", "kind": "watch", "every": 1})
        for start in range(0, args.steps, 500):
            writer.write_segment(segment(np.arange(start, min(start + 500, args.steps)), layers,
                                         rng))
        writer.close("finished", "", args.steps)
        run, read_s = timed(lambda: tr.open_training(store, writer.run_id))
    print(f"run: {args.steps:,} steps x {args.layers} layers, {len(run.events):,} events, "
          f"{len(run.scalars):,} scalars")

    def figures():
        return [charts.grad_norm_heatmap(run.events, "grad_output"),
                charts.scalar_curves(run.scalars),
                charts.update_ratio_lines(run.scalars),
                charts.dead_fraction_heatmap(run.scalars),
                charts.ratio_heatmap(run.events, run.events)]

    figs, fig_s = timed(figures)

    def naive():
        sel = run.events[run.events["role"] == "grad_output"].astype({"layer": str})
        return np.sqrt(sel.assign(sq=sel["norm"] ** 2).pivot_table(
            index="layer", columns="step", values="sq", aggfunc="sum"))

    _, naive_s = timed(naive)
    _, heat_s = timed(lambda: tv.norm_matrix(run.events, "grad_output"))
    sent = sum(np.asarray(d.z).size if getattr(d, "z", None) is not None else
               (len(d.y) if getattr(d, "y", None) is not None else 0)
               for f in figs for d in f.data)
    print(f"{'what':<52} {'seconds':>8}")
    print(f"{'read (open_training, figure columns)':<52} {read_s:8.2f}")
    print(f"{'all five figures':<52} {fig_s:8.2f}")
    print(f"{'heatmap table (norm_matrix)':<52} {heat_s:8.3f}")
    print(f"{'baseline: pandas pivot_table of the same table':<52} {naive_s:8.3f}")
    print(f"norm_matrix / pivot_table: {heat_s / naive_s:.3f}x")
    print(f"heatmap columns: {np.asarray(figs[0].data[0].z).shape[1]} "
          f"({figs[0].layout.title.text.split(' — ')[-1]})")
    print(f"values sent by the five figures: {sent:,} (budget {charts.MAX_VALUES:,} each)")


if __name__ == "__main__":
    main()
