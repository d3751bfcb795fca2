"""Pieces every CLI subcommand shares: the common options, the store, plain output."""

from __future__ import annotations

import argparse


def common_options() -> argparse.ArgumentParser:
    """Options every (sub)command accepts, so ``--store`` may also follow the command."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS,
                   help="store folder (default: $HOOKLAB_STORE, else ./hooklab-runs)")
    return p


def open_store(args: argparse.Namespace):
    """The TraceStore named by ``--store`` (else ``$HOOKLAB_STORE``, else ./hooklab-runs)."""
    from hooklab.store import TraceStore

    return TraceStore(getattr(args, "store", None))


def out(text: str = "") -> None:
    """Write one line of command output to stdout."""
    print(text)
