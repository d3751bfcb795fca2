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


DEVICE_HELP = ("where the model runs: cpu, cuda, cuda:N, mps or auto (a GPU when one is there, "
               "else cpu; default: cpu). Recorded tensors are stored on the CPU either way")


def resolve_device(name: str | None):
    """A ``torch.device`` for ``--device``; a one-line :class:`HooklabError` when it is unusable."""
    import torch

    from hooklab.errors import HooklabError

    name = (name or "cpu").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise HooklabError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HooklabError(f"--device {name}: CUDA is not available here (torch "
                               f"{torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HooklabError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                               "CUDA device(s)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise HooklabError(f"--device {name}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise HooklabError(f"--device {name}: use cpu, cuda, cuda:N, mps or auto")
    return dev
