"""``python -m hooklab train``: a short training run under edits, saved as a run."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, cast

from hooklab.cli.common import PathArg
from hooklab.cli.common import common_options as _common
from hooklab.cli.common import open_store as _store
from hooklab.cli.common import out as _out
from hooklab.core.errors import HooklabError
from hooklab.models import defaults as model_defaults
from hooklab.models import weights
from hooklab.studies import train

TRAIN_EPILOG = """\
examples:
  # the default: SimpleCNN on the embedded shapes data (about 13 s on 2 cores)
  python -m hooklab train
  # the same with the gradient at conv2 halved on every step, compared later on the Runs page
  python -m hooklab train --edit "conv2=scale(0.5)" --tags halve
  # the seed's bias remark: a spurious corner cue agrees with the label 95 % of the time
  python -m hooklab train --data biased_shapes --save-weights biased.safetensors
  # the seed's own training, exactly (10 classes, manual_seed(42), 1 epoch, Adam 1e-3, batch
  # 64) on a local CIFAR-10 copy (folder holding cifar-10-batches-py; nothing downloads)
  python -m hooklab train --data cifar10 --recipe seed --cifar10-root ./data
  # retrain the shipped default weights and rewrite hooklab/defaults (files + manifest)
  python -m hooklab train --export-defaults
"""


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", parents=[_common()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train the seed's SimpleCNN on shapes (optionally under edits) and save the run",
        description="Train a zoo model on the embedded shapes data, applying edits on every "
                    "step; record loss, accuracy and per-layer gradient norms per step and save "
                    "them as a run in the store.",
        epilog=TRAIN_EPILOG)
    p.add_argument("--model", default="simple_cnn", help="zoo model (default: %(default)s)")
    p.add_argument("--data", default="shapes",
                   choices=("shapes", "biased_shapes", "rebalanced_shapes", "cifar10"),
                   help="training data (default: %(default)s; cifar10 needs --recipe seed)")
    p.add_argument("--recipe", default="hooklab", choices=("hooklab", "seed"),
                   help="'seed': the seed's own CIFAR-10 training exactly (10-class SimpleCNN, "
                        "manual_seed(42), one epoch, Adam lr 1e-3, batch 64); the step, lr, "
                        "batch and seed options are then ignored (default: %(default)s)")
    p.add_argument("--cifar10-root", default=None, metavar="DIR", action=PathArg,
                   kind="input_dir",
                   help="folder holding cifar-10-batches-py (default: $HOOKLAB_CIFAR10, "
                        "./data, ~/.cache/hooklab/data)")
    p.add_argument("--export-defaults", action="store_true",
                   help="retrain the shipped default models and rewrite their weights and "
                        "defaults.json (in --out); stores no run")
    p.add_argument("--out", default=None, metavar="DIR", action=PathArg, kind="store",
                   help="--export-defaults: target folder (default: the package's "
                        "hooklab/defaults)")
    p.add_argument("--cue-prob", type=float, default=0.95,
                   help="biased_shapes: how often the cue names the label (default: 0.95)")
    d = train.TrainConfig()  # the library's defaults: the CLI trains exactly what trained_model() caches
    p.add_argument("--steps", type=int, default=d.steps,
                   help="optimiser steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="images per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--act-penalty", type=float, default=d.act_penalty, metavar="W",
                   help="weight of the mean squared activation at --act-layer added to the "
                        "loss; keeps Grad-CAM on the object; 0 turns it off "
                        "(default: %(default)s)")
    p.add_argument("--act-layer", default=None, metavar="LAYER",
                   help="layer of the activation penalty (default: the CAM layer, conv3)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order seed")
    p.add_argument("--edit", action="append", default=[], metavar="LAYER=EDIT",
                   help="edit applied on every step, e.g. 'conv2=scale(0.5)'; repeatable")
    p.add_argument("--record-every", type=int, default=1, metavar="K",
                   help="record gradient norms every K steps (default: 1)")
    p.add_argument("--save-weights", metavar="PATH", default=None, action=PathArg,
                   kind="output_file",
                   help="also write the trained weights to PATH (.safetensors)")
    p.add_argument("--author", default=None, help="who made the run (default: login name)")
    p.add_argument("--notes", default="", help="free text stored with the run")
    p.add_argument("--tags", default="", help="comma-separated labels")
    p.add_argument("--no-save", action="store_true", help="train and report, store nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the run id")
    p.set_defaults(func=cmd_train)


def _config(args: argparse.Namespace):
    if args.recipe == "seed":
        if args.data not in ("shapes", "cifar10") or args.edit:
            raise HooklabError("--recipe seed trains the seed's CIFAR-10 model as the seed does: "
                               "use it with --data cifar10 and no --edit")
        return dataclasses.replace(train.seed_recipe_config(args.cifar10_root),
                                   record_every=args.record_every)
    if args.data == "cifar10":
        raise HooklabError("--data cifar10 trains the seed's recipe: add --recipe seed")
    return train.TrainConfig(model=args.model, data=args.data, cue_prob=args.cue_prob,
                             steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             act_penalty=args.act_penalty, act_layer=args.act_layer,
                             seed=args.seed, edits=list(args.edit),
                             record_every=args.record_every)


def _export(args: argparse.Namespace) -> int:
    # lazy: the export module (and the bias study it retrains) is only for --export-defaults
    from hooklab.studies.export_defaults import export_defaults

    def progress(name: str, step: int, total: int) -> None:
        if not args.quiet and (step == total or step % 50 == 0):
            print(f"  {name}: step {step}/{total}", file=sys.stderr)

    manifest = export_defaults(args.out, progress)
    for m in manifest["models"]:
        _out(f"{m['file']}  sha256 {m['sha256']}  test accuracy {m['test_accuracy']:.3f}")
    _out(f"wrote {len(manifest['models'])} default models and defaults.json in "
         f"{args.out or model_defaults.DEFAULTS_DIR}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.export_defaults:
        return _export(args)
    if args.out is not None:
        raise HooklabError("--out names the folder of --export-defaults; to keep the weights "
                           "of this run use --save-weights PATH")
    config = _config(args)
    store = None if args.no_save else _store(args, write=True)
    marks = {max(1, round(config.steps * f / 10)) for f in range(1, 11)}

    def progress(step: int, total: int, m: dict) -> None:
        if not args.quiet and step in marks:
            print(f"  step {step}/{total}  loss {m.get('loss', float('nan')):.4f}  "
                  f"batch accuracy {m.get('accuracy', float('nan')):.3f}", file=sys.stderr)

    # return_model=True: train_run returns (trace, model); it has no overloads saying so
    trace, model = cast("tuple[Any, Any]", train.train_run(config, progress, return_model=True))
    if args.save_weights:
        weights.save_safetensors(model, args.save_weights)
    rid = store.save(trace, author=args.author, notes=args.notes, tags=args.tags) if store else None
    if args.quiet:
        if rid:
            _out(rid)
        return 0
    summary = trace.meta.get("train", {})
    acc = summary.get("test_accuracy")
    _out(f"trained {config.model} on {config.data} for {config.steps} steps"
         + (" (the seed's recipe)" if config.recipe == "seed" else "")
         + (f" under {', '.join(args.edit)}" if args.edit else "")
         + (f": test accuracy {acc:.3f}" if isinstance(acc, float) else ""))
    _out(f"saved run {rid} in {store.root}" if store is not None and rid
         else "not saved (--no-save)")
    return 0
