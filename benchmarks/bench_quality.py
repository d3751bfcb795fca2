"""CAM quality on the shapes test split: every method beside a seeded random-map baseline.

Model: the SimpleCNN trained on shapes by :mod:`hooklab.train` (cached after the first run).
Targets: each image's predicted class. Layer: the auto layer (``conv3``, the seed's).
Columns: pointing game (max of the map inside the object mask; goal ≥ 0.95 for Grad-CAM), the
same within ``--tolerance`` px of the mask,
Average Drop % (lower is better), Increase in Confidence % (higher is better), deletion AUC
(lower is better), insertion AUC (higher is better), seconds to compute the maps.
Then the bias experiment: fraction of CAM maxima on the spurious cue vs on the object, for a
model trained on biased shapes (cue names the label 95 % of the time) and one trained on
rebalanced shapes.

Usage: ``python benchmarks/bench_quality.py [--n 200] [--steps 16] [--tolerance 2] [--no-bias]``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hooklab import bias, cam, metrics  # noqa: E402
from hooklab.data import make_shapes  # noqa: E402


def shapes_model():
    from hooklab import train

    return train.trained_model(train.TrainConfig())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="test images")
    ap.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    ap.add_argument("--tolerance", type=float, default=2.0,
                    help="second pointing column's tolerance, px (15 px at 224 px ~ 2 px at 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bias", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    model = shapes_model().eval()
    test = make_shapes(args.n, seed=args.seed, split="test")
    with torch.no_grad():
        acc = float((model(test.images).argmax(1) == test.labels).float().mean())
    layer = cam.auto_layer(model, test.images)
    print(f"CAM quality — SimpleCNN trained on shapes (test accuracy {acc:.3f}), layer {layer!r}, "
          f"{args.n} test images, predicted-class targets, deletion/insertion {args.steps} "
          f"steps, random baseline seed {args.seed}")
    table = metrics.compare_methods(model, test.images, test.masks, steps=args.steps,
                                    tolerance=[0.0, args.tolerance], seed=args.seed)
    tol_col = f"pointing@{args.tolerance:g}px"
    print(f"{'method':<10} {'pointing':>9} {'±' + format(args.tolerance, 'g') + 'px':>7} "
          f"{'AD %':>7} {'IC %':>7} {'del AUC':>8} {'ins AUC':>8} {'map s':>7}")
    for row in table.to_dict("records"):
        secs = "" if row["seconds"] != row["seconds"] else f"{row['seconds']:.2f}"
        print(f"{row['method']:<10} {row['pointing']:>9.3f} {row[tol_col]:>7.3f} "
              f"{row['average_drop']:>7.1f} {row['increase_confidence']:>7.1f} "
              f"{row['deletion_auc']:>8.3f} {row['insertion_auc']:>8.3f} {secs:>7}")
    pg = float(table.loc[table["method"] == "gradcam", "pointing"].iloc[0])
    print(f"Grad-CAM pointing game {pg:.3f} (goal >= 0.95): {'met' if pg >= 0.95 else 'NOT met'}")
    if not args.no_bias:
        results = {tol: bias.run_bias_experiment(n_test=args.n * 2, seed=args.seed, tolerance=tol)
                   for tol in (0.0, args.tolerance)}
        res, res_tol = results[0.0], results[args.tolerance]
        print()
        print(f"Bias experiment — {res.method} at {res.layer!r}, {args.n * 2} biased-shapes test "
              "images (cue uniformly random): where the CAM maximum lands (exact / within "
              f"{args.tolerance:g} px)")
        print(f"{'training data':<26} {'on cue':>13} {'on object':>13} {'acc':>6} "
              f"{'acc cue≠label':>14} {'pred = cue':>11}")
        for name, arm in res.arms.items():
            t = res_tol.arms[name]
            label = f"{name} (cue_prob {arm.cue_prob:.2f})"
            print(f"{label:<26} {arm.on_cue:>6.3f}/{t.on_cue:<6.3f} "
                  f"{arm.on_object:>6.3f}/{t.on_object:<6.3f} {arm.accuracy:>6.3f} "
                  f"{arm.accuracy_conflict:>14.3f} {arm.follows_cue:>11.3f}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
