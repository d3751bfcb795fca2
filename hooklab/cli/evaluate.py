"""``python -m hooklab evaluate``: CAM methods scored over a data set, in-process or on Ray.

A thin shell over :func:`hooklab.studies.evaluation.evaluate`: the arguments map one to one,
a progress bar goes to stderr, the summary table (mean ± sd per method × layer × metric) to
stdout. The per-image results are a run in the store; ``--csv`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from hooklab.cli.common import PathArg
from hooklab.cli.common import common_options as _common
from hooklab.cli.common import open_store as _store
from hooklab.cli.common import out as _out
from hooklab.core.errors import HooklabError
from hooklab.studies.evaluation import METRICS, evaluate
from hooklab.studies.evaluation.results import EvaluationResult

EVALUATE_EPILOG = """\
examples:
  # Grad-CAM and Grad-CAM++ on 200 shapes images: pointing game, AD/IC, deletion, insertion
  python -m hooklab evaluate --model simple_cnn --data shapes -n 200 --method gradcam gradcampp
  # the same on a local Ray with 2 workers (identical numbers); a re-run resumes, skipping
  # the images already scored
  python -m hooklab evaluate --model simple_cnn -n 2000 --ray local --workers 2
  # an ImageFolder (one sub-folder per class), ROAD too, per-image results into a CSV file
  python -m hooklab evaluate --model resnet18 --weights ./r18.pt --data imagefolder:./val \\
      --metric deletion insertion road --csv per_image.csv
  # a cluster: --ray ADDRESS (or $HOOKLAB_RAY_ADDRESS); the driver writes the store
  python -m hooklab evaluate --model simple_cnn -n 50000 --ray ray://head:10001
"""


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", parents=[_common()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="score CAM methods over a data set (in-process or on Ray) and store the results",
        description="Score CAM methods at chosen layers over a data set with faithfulness "
                    "metrics, one row per image x method x layer, stored as a run (resumable: "
                    "the same arguments continue an unfinished run).",
        epilog=EVALUATE_EPILOG)
    p.add_argument("--model", default="simple_cnn",
                   help="zoo or registered model (default: %(default)s, its shipped weights)")
    p.add_argument("--weights", default=None, action=PathArg, kind="weights",
                   help="the model's weights: a keyword (shapes, random, imagenet) or a file")
    p.add_argument("--data", default="shapes", metavar="DATA",
                   help="shapes, biased_shapes, cifar10[:ROOT] or imagefolder:PATH "
                        "(default: %(default)s)")
    p.add_argument("--split", default="test", help="data split (default: %(default)s)")
    p.add_argument("-n", type=int, default=None, metavar="N",
                   help="the first N images (default: all; shapes: 1000)")
    p.add_argument("--method", nargs="+", default=["gradcam"], metavar="METHOD",
                   help="CAM methods (default: gradcam)")
    p.add_argument("--layer", nargs="+", default=None, metavar="LAYER",
                   help="target layers (default: the model's automatic CAM layer)")
    p.add_argument("--metric", nargs="+", default=None, metavar="METRIC",
                   help=f"of {', '.join(METRICS)} (default: all but road; pointing only "
                        "where the data has masks)")
    p.add_argument("--target", default="predicted", choices=("predicted", "label"),
                   help="the class each map explains (default: %(default)s)")
    p.add_argument("--steps", type=int, default=32, help="deletion/insertion steps")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per chunk: the unit of work and of resumption")
    p.add_argument("--seed", type=int, default=0, help="data and metric seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads per scorer")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="'local' (a Ray on this machine) or a cluster address (default: "
                        "$HOOKLAB_RAY_ADDRESS, else in-process)")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray actors (default: the cluster's CPUs)")
    p.add_argument("--ray-timeout", type=float, default=20.0, metavar="S",
                   help="seconds a cluster address may take to answer (default: 20)")
    p.add_argument("--new", action="store_true",
                   help="always a new run (default: resume the run of the same arguments)")
    p.add_argument("--csv", default=None, metavar="PATH", action=PathArg, kind="output_file",
                   help="also write the per-image table to PATH")
    p.add_argument("--author", default=None, help="who made the run (default: login name)")
    p.add_argument("--tags", default="", help="comma-separated labels")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the run id")
    p.set_defaults(func=cmd_evaluate)


class ProgressBar:
    """``images done / total`` on one stderr line (redrawn on a terminal, every 10 % else)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream, self.width = stream if stream is not None else sys.stderr, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = int(10 * done / total) if total else 10
        if not self.tty and tenth == self.shown:
            return
        self.shown = tenth
        frac = done / total if total else 1.0
        bar = "#" * int(self.width * frac)
        elapsed = time.perf_counter() - self.start
        line = (f"[{bar:<{self.width}}] {done}/{total} images  {elapsed:.0f} s")
        end = "" if self.tty and done < total else "\n"
        print(("\r" if self.tty else "") + line, end=end, file=self.stream, flush=True)


def _report(res: EvaluationResult) -> None:
    for note in res.notes:
        _out(f"note: {note}")
    table = res.summary.copy()
    for col in ("mean", "sd"):
        table[col] = table[col].map(lambda v: "" if v != v else f"{v:.4f}")
    _out(table.to_string(index=False))
    state = (f"scored {res.scored}, resumed past {res.skipped}" if res.skipped
             else f"scored {res.scored}")
    _out(f"run {res.run_id}: {res.spec.n} images ({state})")


def _write_csv(res: EvaluationResult, path: str) -> None:
    part = Path(f"{path}.part")
    res.per_image.to_csv(part, index=False)
    os.replace(part, path)  # a reader never sees half a table


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 1:
        raise HooklabError(f"-n must be a positive number of images, got {args.n}")
    store = _store(args, write=True)
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    bar = None if args.quiet else ProgressBar()
    res = evaluate(args.model, args.data, methods=args.method, layers=args.layer,
                   metrics=args.metric, n=args.n, split=args.split,
                   batch_size=args.batch_size, seed=args.seed, store=store, ray=args.ray,
                   workers=args.workers, resume=not args.new, progress=bar,
                   weights=args.weights, target=args.target, steps=args.steps,
                   threads=args.threads, author=args.author, tags=tags,
                   ray_timeout=args.ray_timeout)
    if args.csv:
        _write_csv(res, args.csv)
    if args.quiet:
        _out(res.run_id)
        return 0
    _report(res)
    if args.csv:
        _out(f"per-image table: {args.csv}")
    return 0
