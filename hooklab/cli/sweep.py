"""``python -m hooklab sweep``: edit sweeps, a thin shell over :mod:`hooklab.studies.sweep`.

``sweep run`` trains a grid of gradient-edit configurations x seeds with ``watch`` (Ray Tune on
a local Ray by default, ``--ray ADDRESS`` for a cluster, ``--in-process`` without Ray), one stored
run per trial, and prints the trials table; ``sweep list`` and ``sweep show SWEEP_ID`` read
sweeps back from the store alone. Bad edit text, an edit naming no layer, bad sizes and a cluster
that does not answer are one ``error:`` line (exit 2) before any trial; a sweep in which some
trials failed prints the whole table and exits 1.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from hooklab.cli.common import common_options as _common
from hooklab.cli.common import open_store as _store
from hooklab.cli.common import out as _out
from hooklab.studies.cluster import resolve_address
from hooklab.studies.sweep import SweepResult, baseline_label, list_sweeps, load_sweep, sweep_edits

__all__ = ["DEFAULT_CONFIGS", "EXIT_PARTIAL", "add_sweep_parser", "trials_text"]

#: Exit code when the sweep ran but some trials failed.
EXIT_PARTIAL = 1
#: The configurations of ``sweep run`` without ``--edit``: the baseline and the seed's halving.
DEFAULT_CONFIGS = ("", "conv2=scale(0.5)")

SWEEP_EPILOG = """\
examples:
  # the no-edit baseline and two strengths of the seed's halving, three seeds each (9 trials),
  # as Ray Tune trials on a Ray started here with this machine's CPUs
  python -m hooklab sweep run --edit "" --edit "conv2=scale(0.5)" --edit "conv2=scale(0.25)" \\
      --seeds 0 1 2 --steps 40
  # the same one trial after another in this process (no Ray needed)
  python -m hooklab sweep run --edit "" --edit "conv2=scale(0.5)" --seeds 0 1 --in-process
  # on a running cluster (the store must be a folder every node mounts at the same path)
  python -m hooklab --store /shared/lab-runs sweep run --edit "" --edit "conv1=zero()" \\
      --ray 10.0.0.5:6379 --cpus-per-trial 2
  python -m hooklab sweep list                       # the sweeps in the store
  python -m hooklab sweep show SWEEP_ID              # a sweep's trials, from the store alone

An empty --edit is the no-edit baseline (the Runs page compares every trial with the baseline of
its seed). Several edits in one configuration: separate them with ';'. Without --ray or
--in-process, $HOOKLAB_RAY_ADDRESS names the cluster, else a local Ray is started.
"""


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    """``sweep run | list | show``."""
    p = sub.add_parser(
        "sweep", parents=[_common()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train a grid of edit configurations x seeds (Ray Tune), one run per trial",
        description="Edit sweeps: train the SimpleCNN on the shapes set once per edit "
                    "configuration and seed, each trial recorded with watch into the store "
                    "(its meta carries the sweep id, configuration and seed); list and show "
                    "sweeps from the store.", epilog=SWEEP_EPILOG)
    actions = p.add_subparsers(dest="sweep_command", metavar="ACTION")
    p.set_defaults(func=lambda args: _usage(p))

    q = actions.add_parser(
        "run", parents=[_common()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train every configuration x seed and print the trials table",
        description="Train every configuration x seed under watch, one stored run per trial, "
                    "and print the trials table (final test accuracy and loss per trial).",
        epilog=SWEEP_EPILOG)
    q.add_argument("--edit", action="append", default=None, metavar="CONFIG",
                   help="one configuration: LAYER=EDIT, several joined by ';', or '' for the "
                        "no-edit baseline; repeatable (default: '' and 'conv2=scale(0.5)')")
    q.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="N",
                   help="seeds (initialisation and batch order); every configuration runs "
                        "each (default: 0)")
    q.add_argument("--steps", type=int, default=40,
                   help="optimiser steps per trial (default: %(default)s)")
    q.add_argument("--model", default="simple_cnn",
                   help="zoo or registered model taking 32x32 RGB images (default: %(default)s)")
    q.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: 0.002)")
    q.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    q.add_argument("--n-train", type=int, default=1024, metavar="N",
                   help="shapes training images (default: %(default)s)")
    q.add_argument("--n-test", type=int, default=256, metavar="N",
                   help="held-out shapes images for the final accuracy (default: %(default)s)")
    q.add_argument("--record-every", type=int, default=1, metavar="K",
                   help="record every K-th step (default: 1)")
    q.add_argument("--name", default=None, help="free text naming the sweep")
    where = q.add_mutually_exclusive_group()
    where.add_argument("--ray", default=None, metavar="local|ADDRESS",
                       help="'local' (a Ray started here) or a cluster address (host:port, "
                            "ray://host:port) (default: $HOOKLAB_RAY_ADDRESS, else local)")
    where.add_argument("--in-process", action="store_true",
                       help="run the trials here one after another, without Ray")
    q.add_argument("--cpus-per-trial", type=int, default=1, metavar="N",
                   help="CPUs (and torch threads) per trial (default: 1)")
    q.add_argument("--ray-cpus", type=int, default=None, metavar="N",
                   help="CPUs of a local Ray (default: this machine's)")
    q.add_argument("--ray-timeout", type=float, default=20.0, metavar="S",
                   help="seconds a cluster address may take to answer (default: 20)")
    q.add_argument("-q", "--quiet", action="store_true", help="print only the sweep id")
    q.set_defaults(func=cmd_sweep_run)

    q = actions.add_parser("list", parents=[_common()],
                           help="one line per sweep in the store, newest first")
    q.set_defaults(func=cmd_sweep_list)

    q = actions.add_parser("show", parents=[_common()],
                           help="a sweep's trials table, rebuilt from the store")
    q.add_argument("sweep_id", help="the sweep's id ('hooklab sweep list' lists them)")
    q.set_defaults(func=cmd_sweep_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def trials_text(trials: pd.DataFrame) -> str:
    """The trials table as text: the no-edit configuration shown as such, numbers rounded."""
    if trials.empty:
        return "(no trials)"
    df = trials.copy()
    df["config"] = df["config"].map(baseline_label)
    for col in ("final_accuracy", "final_loss"):
        df[col] = df[col].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    df["message"] = df["message"].astype(str).str.slice(0, 100)
    return df.to_string(index=False)


def _print(result: SweepResult, header: str) -> None:
    _out(header)
    _out(trials_text(result.trials))


def cmd_sweep_list(args: argparse.Namespace) -> int:
    store = _store(args)
    sweeps = list_sweeps(store)
    _out(sweeps.to_string(index=False) if len(sweeps) else f"no sweeps in {store.root}")
    return 0


def cmd_sweep_show(args: argparse.Namespace) -> int:
    result = load_sweep(_store(args), args.sweep_id)
    _print(result, f"sweep {result.sweep_id}" + (f" ({result.name})" if result.name else ""))
    return 0


def cmd_sweep_run(args: argparse.Namespace) -> int:
    store = _store(args, write=True)  # a store that refuses new files fails before any trial
    address = None if args.in_process else (resolve_address(args.ray) or "local")

    def progress(done: int, total: int, text: str) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {text}", file=sys.stderr, flush=True)

    result = sweep_edits(list(args.edit) if args.edit is not None else list(DEFAULT_CONFIGS),
                         seeds=args.seeds, steps=args.steps, model=args.model, store=store,
                         ray=address, in_process=args.in_process, every=args.record_every,
                         lr=args.lr, batch_size=args.batch_size, n_train=args.n_train,
                         n_test=args.n_test, cpus_per_trial=args.cpus_per_trial,
                         name=args.name, ray_cpus=args.ray_cpus, timeout=args.ray_timeout,
                         progress=progress)
    if args.quiet:
        _out(result.sweep_id)
    else:
        _print(result, f"sweep {result.sweep_id}: {len(result.trials)} trials "
                       f"({result.where}, {result.seconds:.1f} s) in {result.store}")
    failed = len(result.failed)
    if failed:
        print(f"error: {failed} of {len(result.trials)} trial(s) failed (see the table; "
              f"'hooklab sweep show {result.sweep_id}' shows it again)", file=sys.stderr)
        return EXIT_PARTIAL
    return 0
