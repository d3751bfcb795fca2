"""CAM quality on the shapes test split: every method beside a seeded random-map baseline.

Model: the shipped default SimpleCNN trained on shapes (``hooklab/defaults``, the same bytes on
every machine; the bias experiment uses the two shipped arms), so the figures differ between
machines only by the float rounding of the CAM computation.
Targets: each image's predicted class. Layer: the auto layer (``conv3``, the seed's).
Columns: pointing game (max of the map inside the object mask; goal ≥ 0.95 for Grad-CAM), the
same within ``--tolerance`` px of the mask,
Average Drop % (lower is better), Increase in Confidence % (higher is better), deletion AUC
(lower is better), insertion AUC (higher is better), seconds to compute the maps.
Then Grad-CAM's pointing game over several training seeds, with the default training (which
adds a small penalty on conv3's activations, see :mod:`hooklab.studies.train`) and without it.
Then the bias experiment: fraction of CAM maxima on the spurious cue vs on the object, for a
model trained on biased shapes (cue names the label 95 % of the time) and one trained on
rebalanced shapes, with Grad-CAM, HiResCAM (the experiment's default) and Score-CAM.

Then the SimpleViT (shipped ``simple_vit_shapes``, issue 13): every method at the automatic
layer with the same columns beside the random baseline, each method marked class-specific or not
(EigenCAM and KPCA-CAM give one map for every class); each class-specific gradient method and
Score-CAM at the block whose ``ln_1`` points best on ``--vit-select`` train images, scored on
the test images; and the goal line: the (method, block) pair chosen on the train images among
those whose maps pass the MPRT sanity check, its pointing game on the test images >= 0.9.
``--vit-seeds 0 1 2`` repeats that choice for the default ViT training at other seeds (trained
on this machine).

Then "Can this map be trusted?": for every method of the registry (``hooklab.cam.METHODS``) on
``--trust-n`` test images: ROAD MoRF / LeRF / combined (:mod:`hooklab.cam.road`, logit score,
percentiles 10..90), the MPRT cascade's mean Spearman and SSIM at full randomisation
(:func:`hooklab.sanity.mprt`) and the data-randomisation test (shipped ``simple_cnn_shuffled``,
SimpleCNN only), beside the random-map baseline's ROAD; the ``check`` column says which methods
fail the MPRT check (goal: similarity at full randomisation <= 0.3). A method the model cannot
have (CAM without a pooling + Linear head, attention methods on a CNN) is listed as n/a.

Usage: ``python benchmarks/bench_quality.py [--n 200] [--steps 16] [--tolerance 2]
[--seeds 0 1 2 3] [--no-seeds] [--no-bias] [--threads K] [--trust-n 32] [--no-trust]
[--only-trust] [--methods gradcam ...] [--model simple_cnn|simple_vit] [--no-vit] [--only-vit]
[--vit-select 200] [--vit-seeds 0 1 2]`` (``--seeds`` trains one model per
seed and recipe; ``benchmarks/seed_spread.py`` measures the recipe over seeds in full).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _machine import machine_line  # noqa: E402

from hooklab.cam import engine as cam  # noqa: E402
from hooklab.cam import metrics, sanity  # noqa: E402
from hooklab.data.datasets import make_biased_shapes, make_shapes  # noqa: E402
from hooklab.studies import bias  # noqa: E402


def shapes_model(**config):
    from hooklab.studies import train

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


def bias_table(n: int, seed: int, tolerance: float, methods: list[str]) -> None:
    """The bias experiment's arms (shipped weights): where each CAM's maximum lands."""
    test = make_biased_shapes(n, seed=seed, split="test")
    k = len(test.classes)
    print()
    print(f"Bias experiment — {n} biased-shapes test images (cue uniformly random), CAMs at "
          f"conv3: where the CAM maximum lands (exact / within {tolerance:g} px)")
    print(f"{'training data':<26} {'CAM':<9} {'on cue':>13} {'on object':>13} {'acc':>6} "
          f"{'acc cue≠label':>14} {'pred = cue':>11}")
    models = {arm: bias.train_arm(arm, p, seed=seed)
              for arm, p in (("biased", 0.95), ("rebalanced", 1.0 / k))}
    for method in methods:
        for arm, model in models.items():
            maps = torch.cat([cam.compute(model, test.images[i:i + 256], method).maps
                              for i in range(0, n, 256)])  # batches as bias.evaluate_arm
            fr = {tol: bias.location_fractions(maps, test.masks, test.cue_masks, tol)
                  for tol in (0.0, tolerance)}
            with torch.no_grad():
                preds = model(test.images).argmax(1)
            conflict = test.cue_labels != test.labels
            acc = float((preds == test.labels).float().mean())
            acc_c = float((preds[conflict] == test.labels[conflict]).float().mean())
            follows = float((preds == test.cue_labels).float().mean())
            label = f"{arm} ({'shipped' if 'shipped' in model.hooklab_train else 'trained'})"
            a, t = fr[0.0], fr[tolerance]
            print(f"{label:<26} {method:<9} {a['on_cue']:>6.3f}/{t['on_cue']:<6.3f} "
                  f"{a['on_object']:>6.3f}/{t['on_object']:<6.3f} {acc:>6.3f} {acc_c:>14.3f} "
                  f"{follows:>11.3f}")


def trust_table(model, test, methods, n: int, seed: int, data_test: bool) -> None:
    """ROAD, the MPRT cascade at full randomisation and the data-randomisation test per method."""
    from hooklab.cam import road, sanity
    from hooklab.core.errors import HooklabError

    x = test.images[:n]
    print()
    print(f"Can this map be trusted? {n} test images, predicted-class targets; ROAD (logit "
          f"change, percentiles 10..90; MoRF lower, LeRF and combined higher are better); MPRT: "
          f"mean Spearman / SSIM to the original map with every layer randomised (goal <= "
          f"{sanity.THRESHOLD}); data test: the same vs the model trained on shuffled labels")
    print(f"{'method':<19} {'MoRF':>7} {'LeRF':>7} {'comb.':>7} {'MPRT rho':>9} {'MPRT ssim':>10}"
          f" {'data rho':>9} {'data ssim':>10} {'s':>6}  check")
    for name in methods:
        t0 = time.perf_counter()
        try:
            res = cam.compute(model, x, name)
            r = road.road(model, x[res.sample], res.maps, res.targets).summary()
            m = sanity.mprt(model, x, name)
            d = sanity.data_randomisation(x, name) if data_test else None
        except HooklabError as exc:
            print(f"{name:<19} n/a: {str(exc)[:90]}")
            continue
        f = m.final
        dd = (f"{d.final['spearman']:>9.3f} {d.final['ssim']:>10.3f}" if d is not None
              else f"{'':>9} {'':>10}")
        check = "passes" if m.passed else "FAILS (maps survive randomisation)"
        if d is not None and not d.passed:
            check += "; data test FAILS"
        print(f"{name:<19} {r['road_morf']:>7.3f} {r['road_lerf']:>7.3f} "
              f"{r['road_combined']:>7.3f} {f['spearman']:>9.3f} {f['ssim']:>10.3f} {dd} "
              f"{time.perf_counter() - t0:>6.0f}  {check}", flush=True)
    res = cam.compute(model, x, "gradcam")
    rnd = metrics.random_maps(len(res), tuple(x.shape[-2:]), seed=seed)
    r = road.road(model, x[res.sample], rnd, res.targets).summary()
    print(f"{'random':<19} {r['road_morf']:>7.3f} {r['road_lerf']:>7.3f} "
          f"{r['road_combined']:>7.3f}")


def vit_table(n: int, steps: int, tolerance: float, seed: int, n_select: int) -> None:
    """The SimpleViT (shipped ``simple_vit_shapes``): every method at the automatic layer beside
    the random baseline, then :func:`vit_choice` (blocks and method chosen on ``n_select``
    *train* images, scored on the test images)."""
    from hooklab.models import zoo

    vit = zoo.shipped_model("simple_vit_shapes").eval()
    test = make_shapes(n, seed=seed, split="test")
    with torch.no_grad():
        acc = float((vit(test.images).argmax(1) == test.labels).float().mean())
    layer = cam.auto_layer(vit, test.images)
    print()
    print(f"CAM quality — SimpleViT trained on shapes (shipped; test accuracy {acc:.3f}), "
          f"layer {layer!r}, {n} test images, predicted-class targets, deletion/insertion "
          f"{steps} steps, random baseline seed {seed}")
    table = metrics.compare_methods(vit, test.images, test.masks, steps=steps,
                                    tolerance=[0.0, tolerance], seed=seed)
    tol_col = f"pointing@{tolerance:g}px"
    print(f"{'method':<19} {'pointing':>9} {'±' + format(tolerance, 'g') + 'px':>7} "
          f"{'AD %':>7} {'IC %':>7} {'del AUC':>8} {'ins AUC':>8}  class-specific")
    for row in table.to_dict("records"):
        spec = cam.METHODS.get(row["method"])
        kind = "" if spec is None else ("yes" if spec.class_specific else "no (one map for "
                                                                          "every class)")
        print(f"{row['method']:<19} {row['pointing']:>9.3f} {row[tol_col]:>7.3f} "
              f"{row['average_drop']:>7.1f} {row['increase_confidence']:>7.1f} "
              f"{row['deletion_auc']:>8.3f} {row['insertion_auc']:>8.3f}  {kind}")
    rows = {r["method"]: r for r in table.to_dict("records")}
    anyone = max((m for m in rows if m != "random"), key=lambda m: float(rows[m]["pointing"]))
    print(f"random map: {float(rows['random']['pointing']):.3f}; best at the automatic layer: "
          f"{anyone} {float(rows[anyone]['pointing']):.3f}")
    print(f"Each class-specific method at the block whose ln_1 points best on {n_select} "
          f"train images (chosen there), scored on the {n} test images:")
    per_method, (m, b, v), refused = vit_choice(vit, test, n_select, seed)
    for meth, (blk, on_train, on_test) in per_method.items():
        print(f"  {meth:<19} {on_test:.3f} at {blk} (train {on_train:.3f})")
    for meth, blk, final in refused:
        print(f"  passed over: {meth} at {blk}, fails the MPRT check (Spearman "
              f"{final['spearman']:.2f}, SSIM {final['ssim']:.2f} at full randomisation)")
    print(f"SimpleViT class-specific method and block chosen on the train images (best that "
          f"passes MPRT): {m} at {b}, test pointing {v:.3f} (goal >= 0.9): "
          f"{'met' if v >= 0.9 else 'NOT met'}")


def vit_choice(vit, test, n_select: int, seed: int
               ) -> tuple[dict[str, tuple[str, float, float]], tuple[str, str, float],
                          list[tuple[str, str, dict[str, float]]]]:
    """Choose, on ``n_select`` train images, the block (``ln_1`` of each encoder block) of each
    class-specific method that computes from one layer (every gradient CAM, and Score-CAM),
    and the best (method, block) pair whose maps pass the MPRT sanity check (a map that stays
    after the weights are randomised shows the image, not the model); score the choices on
    ``test``.

    Returns ``({method: (block, train pointing, test pointing)}, (method, block, test
    pointing), [(method, block, MPRT similarities) of the better pairs that failed]``) (block
    names without ``encoder.layers.``).
    """
    blocks = [f"encoder.layers.encoder_layer_{i}.ln_1" for i in range(len(vit.encoder.layers))]
    chosen_from = [k for k, sp in cam.METHODS.items()
                   if sp.class_specific and sp.needs_grad and sp.run is None] + ["scorecam"]
    pick = make_shapes(n_select, seed=seed + 1, split="train")

    def pointing(images, masks):
        res = cam.compute_many(vit, images, chosen_from, blocks)
        return {(m, b): metrics.pointing_game(res[m, b].maps, masks[res[m, b].sample])
                for m in chosen_from for b in blocks}

    on_pick, on_test = pointing(pick.images, pick.masks), pointing(test.images, test.masks)
    short = {b: b.replace("encoder.layers.", "") for b in blocks}
    per_method = {}
    for m in chosen_from:
        b = max(blocks, key=lambda b, m=m: on_pick[m, b])
        per_method[m] = (short[b], on_pick[m, b], on_test[m, b])
    # the best pair on the train images whose maps depend on the weights (the MPRT cascade on
    # 32 of the train images: similarity at full randomisation <= 0.3)
    refused: list[tuple[str, str, dict[str, float]]] = []
    for m, b in sorted(on_pick, key=lambda k: -on_pick[k]):
        check = sanity.mprt(vit, pick.images[:32], m, b)
        if check.passed:
            return per_method, (m, short[b], on_test[m, b]), refused
        refused.append((m, short[b], check.final))
    raise SystemExit("no class-specific method passes the MPRT check on the SimpleViT")


def vit_seed_spread(seeds, n: int, n_select: int, seed: int) -> None:
    """The same choice for the SimpleViT's default training (:func:`vit_config`) at several
    training seeds (each trained here, or read from the cache)."""
    from hooklab.studies import train

    test = make_shapes(n, seed=seed, split="test")
    print()
    print(f"SimpleViT over training seeds (the default recipe, trained on this machine): the "
          f"class-specific method and block chosen on {n_select} train images, pointing on "
          f"{n} test images")
    for s in seeds:
        vit = train.trained_model(train.vit_config(seed=s)).eval()
        _, (m, b, v), refused = vit_choice(vit, test, n_select, seed)
        over = "; ".join(f"{rm} at {rb}" for rm, rb, _ in refused)
        print(f"  seed {s}: {m} at {b}: {v:.3f}"
              + (f" (passed over, failing MPRT: {over})" if over else ""))


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
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--trust-n", type=int, default=32, help="images of the trust table")
    ap.add_argument("--no-trust", action="store_true", help="skip the trust table")
    ap.add_argument("--only-trust", action="store_true", help="only the trust table")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="trust-table methods (default: every method of the registry)")
    ap.add_argument("--model", default="simple_cnn", choices=["simple_cnn", "simple_vit"],
                    help="shipped model of the trust table (simple_vit: simple_vit_shapes)")
    ap.add_argument("--no-vit", action="store_true", help="skip the SimpleViT table")
    ap.add_argument("--only-vit", action="store_true", help="only the SimpleViT table")
    ap.add_argument("--vit-select", type=int, default=200,
                    help="train images that choose each method's block in the SimpleViT table")
    ap.add_argument("--vit-seeds", type=int, nargs="*", default=[],
                    help="SimpleViT training seeds for the spread of the chosen method (trains "
                         "one ViT per seed, ~1.5 min each on 2 cores; default: none)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    if args.only_vit:
        vit_table(args.n, args.steps, args.tolerance, args.seed, args.vit_select)
        if args.vit_seeds:
            vit_seed_spread(args.vit_seeds, args.n, args.vit_select, args.seed)
        print(f"total {time.perf_counter() - t0:.0f} s")
        return
    model = shapes_model().eval()
    test = make_shapes(args.n, seed=args.seed, split="test")
    if not args.no_trust:
        from hooklab.models import zoo

        tmodel = model if args.model == "simple_cnn" else zoo.shipped_model("simple_vit_shapes")
        print(f"trust table model: {args.model}")
        trust_table(tmodel, test, args.methods or list(cam.METHODS), args.trust_n, args.seed,
                    data_test=args.model == "simple_cnn")
    if args.only_trust:
        print(f"total {time.perf_counter() - t0:.0f} s")
        return
    with torch.no_grad():
        acc = float((model(test.images).argmax(1) == test.labels).float().mean())
    layer = cam.auto_layer(model, test.images)
    print(f"CAM quality — SimpleCNN trained on shapes ({model.hooklab_info.weights}; test "
          f"accuracy {acc:.3f}), layer {layer!r}, "
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
        bias_table(args.n * 2, args.seed, args.tolerance, args.bias_methods)
    if not args.no_vit:
        vit_table(args.n, args.steps, args.tolerance, args.seed, args.vit_select)
        if args.vit_seeds:
            vit_seed_spread(args.vit_seeds, args.n, args.vit_select, args.seed)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
