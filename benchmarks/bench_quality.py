"""CAM quality on the shapes test split: every method beside a seeded random-map baseline.

Model: the SimpleCNN trained on shapes by :mod:`hooklab.train` (cached after the first run).
Targets: each image's predicted class. Layer: the auto layer (``conv3``, the seed's).
Columns: pointing game (max of the map inside the object mask; goal ≥ 0.95 for Grad-CAM), the
same within ``--tolerance`` px of the mask,
Average Drop % (lower is better), Increase in Confidence % (higher is better), deletion AUC
(lower is better), insertion AUC (higher is better), seconds to compute the maps.
Then Grad-CAM's pointing game over several training seeds, with the default training (which
adds a small penalty on conv3's activations, see :mod:`hooklab.train`) and without it.
Then the bias experiment: fraction of CAM maxima on the spurious cue vs on the object, for a
model trained on biased shapes (cue names the label 95 % of the time) and one trained on
rebalanced shapes, with Grad-CAM, HiResCAM (the experiment's default) and Score-CAM.

Usage: ``python benchmarks/bench_quality.py [--n 200] [--steps 16] [--tolerance 2]
[--seeds 0 1 2 3] [--no-seeds] [--no-bias]``
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


def shapes_model(**config):
    from hooklab import train

    return train.trained_model(train.TrainConfig(**config))


def seed_spread(seeds, n: int, tolerance: float) -> None:
    """Grad-CAM pointing game of the default training and of the same without the penalty."""
    test = make_shapes(n, seed=0, split="test")
    print()
    print(f"Grad-CAM pointing game over training seeds ({n} test images; exact / within "
          f"{tolerance:g} px)")
    print(f"{'training':<24} " + " ".join(f"{'seed ' + str(s):>13}" for s in seeds)
          + f" {'mean':>13}")
    for label, config in (("default (penalty 0.5)", {}), ("no activation penalty",
                                                          {"act_penalty": 0.0})):
        cells, exact, tol = [], [], []
        for seed in seeds:
            model = shapes_model(seed=seed, **config).eval()
            maps = cam.compute(model, test.images, "gradcam").maps
            exact.append(metrics.pointing_game(maps, test.masks))
            tol.append(metrics.pointing_game(maps, test.masks, tolerance))
            cells.append(f"{exact[-1]:.3f}/{tol[-1]:.3f}")
        mean = f"{sum(exact) / len(exact):.3f}/{sum(tol) / len(tol):.3f}"
        print(f"{label:<24} " + " ".join(f"{c:>13}" for c in cells) + f" {mean:>13}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="test images")
    ap.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    ap.add_argument("--tolerance", type=float, default=2.0,
                    help="second pointing column's tolerance, px (15 px at 224 px ~ 2 px at 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                    help="training seeds for the pointing-game spread")
    ap.add_argument("--no-seeds", action="store_true", help="skip the training-seed spread")
    ap.add_argument("--bias-methods", nargs="+", default=["gradcam", "hirescam", "scorecam"])
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
    if not args.no_seeds:
        seed_spread(args.seeds, args.n, args.tolerance)
    if not args.no_bias:
        print()
        print(f"Bias experiment — {args.n * 2} biased-shapes test images (cue uniformly random), "
              f"CAMs at conv3: where the CAM maximum lands (exact / within {args.tolerance:g} px)")
        print(f"{'training data':<26} {'CAM':<9} {'on cue':>13} {'on object':>13} {'acc':>6} "
              f"{'acc cue≠label':>14} {'pred = cue':>11}")
        for method in args.bias_methods:
            results = {tol: bias.run_bias_experiment(n_test=args.n * 2, seed=args.seed,
                                                     tolerance=tol, method=method)
                       for tol in (0.0, args.tolerance)}
            res, res_tol = results[0.0], results[args.tolerance]
            for name, arm in res.arms.items():
                t = res_tol.arms[name]
                label = f"{name} (cue_prob {arm.cue_prob:.2f})"
                print(f"{label:<26} {method:<9} {arm.on_cue:>6.3f}/{t.on_cue:<6.3f} "
                      f"{arm.on_object:>6.3f}/{t.on_object:<6.3f} {arm.accuracy:>6.3f} "
                      f"{arm.accuracy_conflict:>14.3f} {arm.follows_cue:>11.3f}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
