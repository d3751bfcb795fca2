"""Spread of the training recipe's outcomes over training seeds (for the recipe tests' bounds).

For every seed, three trainings with the default recipe (the configurations of the shipped
defaults with ``seed`` changed; for the two arms also the data seed, as
``bias.arm_config(seed=...)`` does): SimpleCNN on shapes, on biased shapes (cue names the label
95 % of the time) and on rebalanced shapes. Printed per seed:

* shapes: test accuracy (``n_test`` of the config), Grad-CAM pointing game exact and within
  2 px on ``--n`` test images;
* biased: accuracy, accuracy where cue != label, predictions that follow the cue, HiResCAM
  maxima on the cue / on the object, Grad-CAM maxima on the cue;
* rebalanced: accuracy, follows cue, HiResCAM maxima on the object / on the cue.

Then min / max / mean per column. ``tests/test_train.py`` bounds the recipe so that no seed
measured here comes within 0.03 of a bound.

``--steps/--n-train/--n-test`` measure a smaller configuration (the recipe tests train
``--steps 48 --n-train 1536 --n-test 300`` to stay fast).

Usage: ``python benchmarks/seed_spread.py [--seeds 0 1 2 3 4 5 6 7] [--n 300] [--cache DIR]
[--threads K] [--steps S --n-train N --n-test M]`` (weights cached in ``--cache`` /
``$HOOKLAB_CACHE``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _machine import machine_line  # noqa: E402

from hooklab.cam import engine as cam  # noqa: E402
from hooklab.cam import metrics  # noqa: E402
from hooklab.data.datasets import make_biased_shapes, make_shapes  # noqa: E402
from hooklab.studies import (
    bias,  # noqa: E402
    train,  # noqa: E402
)

COLUMNS = ("acc", "pg", "pg2", "b_acc", "b_conf", "b_follow", "b_cue", "b_obj", "b_gc_cue",
           "r_acc", "r_follow", "r_obj", "r_cue")


def measure(seed: int, n: int, **overrides: int) -> dict[str, float]:
    """One seed's outcomes for the three default trainings, with ``overrides`` of TrainConfig
    fields (none and seed 0: the shipped weights)."""
    out: dict[str, float] = {}
    model = train.trained_model(train.TrainConfig(seed=seed, **overrides))
    out["acc"] = float(model.hooklab_train["test_accuracy"])
    test = make_shapes(n, split="test")
    maps = cam.compute(model, test.images, "gradcam").maps
    out["pg"] = metrics.pointing_game(maps, test.masks)
    out["pg2"] = metrics.pointing_game(maps, test.masks, tolerance=2.0)
    btest = make_biased_shapes(n, split="test")
    for arm, prefix in (("biased", "b"), ("rebalanced", "r")):
        m = train.trained_model(bias.arm_config(arm, seed=seed, **overrides))
        a = bias.evaluate_arm(arm, m, btest, method="hirescam")
        out[f"{prefix}_acc"], out[f"{prefix}_follow"] = a.accuracy, a.follows_cue
        out[f"{prefix}_cue"], out[f"{prefix}_obj"] = a.on_cue, a.on_object
        if arm == "biased":
            out["b_conf"] = a.accuracy_conflict
            out["b_gc_cue"] = bias.evaluate_arm(arm, m, btest, method="gradcam").on_cue
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    ap.add_argument("--n", type=int, default=300, help="test images for the CAM fractions")
    ap.add_argument("--cache", default=None, help="weights cache folder (default $HOOKLAB_CACHE)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    for name in ("steps", "n_train", "n_test"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                        help=f"TrainConfig.{name} for all three (default: the default's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.cache:
        os.environ["HOOKLAB_CACHE"] = args.cache
    print(machine_line(), flush=True)
    overrides = {k: getattr(args, k) for k in ("steps", "n_train", "n_test")
                 if getattr(args, k) is not None}
    print(f"recipe spread over training seeds {args.seeds}; {args.n} test images; "
          f"config overrides {overrides or 'none (the defaults)'}")
    print(f"{'seed':>4} " + " ".join(f"{c:>8}" for c in COLUMNS), flush=True)
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        rows.append(measure(seed, args.n, **overrides))
        print(f"{seed:>4} " + " ".join(f"{rows[-1][c]:>8.3f}" for c in COLUMNS), flush=True)
    for label, fn in (("min", min), ("max", max), ("mean", lambda v: sum(v) / len(v))):
        print(f"{label:>4} " + " ".join(f"{fn([r[c] for r in rows]):>8.3f}" for c in COLUMNS))
    print(f"total {time.perf_counter() - t0:.0f} s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
