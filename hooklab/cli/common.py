"""Pieces every CLI subcommand shares: the common options, the store, plain output, and the
checks of path arguments (run when the argument is parsed, so before any work)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from hooklab.core.errors import HooklabError, StoreError
from hooklab.models import registry
from hooklab.store.runs import TraceStore, default_root

MODELS_HELP = ("import these modules first, to register your own models (comma-separated, "
               "repeatable; also $HOOKLAB_MODELS). Trusted code: it runs as you")


def common_options() -> argparse.ArgumentParser:
    """Options every (sub)command accepts, so ``--store`` and ``--models`` may also follow the
    command."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS, action=PathArg,
                   kind="store", help="store folder (default: $HOOKLAB_STORE, else ./hooklab-runs)")
    p.add_argument("--models", metavar="MODULES", dest="models_after", action="append",
                   default=argparse.SUPPRESS, help=MODELS_HELP)
    return p


def load_models(args: argparse.Namespace) -> list[registry.ModelModuleError]:
    """Import the model modules of ``$HOOKLAB_MODELS`` and ``--models`` (before or after the
    command); each one that fails is one ``warning:`` line on stderr. A missing model is an
    error later, where it is asked for (its message names the module that failed)."""
    errors = registry.load_env()
    given = [*(getattr(args, "models", None) or []), *(getattr(args, "models_after", None) or [])]
    errors += registry.load_modules(given, "--models")
    for err in errors:
        print(f"warning: {' '.join(str(err).split())}", file=sys.stderr)
    return errors


def open_store(args: argparse.Namespace, write: bool = False):
    """The TraceStore named by ``--store`` (else ``$HOOKLAB_STORE``, else ./hooklab-runs).

    Args:
        args: the parsed arguments (``store`` may be missing).
        write: the command will write to the store: check now that it can (before any work).

    Raises:
        PathArgError: the root is a file, or cannot be created.
        StoreError: ``write`` and the store does not accept new files.
    """
    root = getattr(args, "store", None)
    if root is None:
        root = default_root()
        check_store_dir(root, "$HOOKLAB_STORE" if os.environ.get("HOOKLAB_STORE") else "store")
    store = TraceStore(root)
    why = _probe_writable(store.root) if write else None
    if why is not None:
        raise StoreError(f"store {store.root} is read-only here ({why})")
    return store


def out(text: str = "") -> None:
    """Write one line of command output to stdout."""
    print(text)


DEVICE_HELP = ("where the model runs: cpu, cuda, cuda:N, mps or auto (a GPU when one is there, "
               "else cpu; default: cpu). Recorded tensors are stored on the CPU either way")


def resolve_device(name: str | None):
    """A ``torch.device`` for ``--device``; a one-line :class:`HooklabError` when it is unusable."""
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


# -- path arguments ------------------------------------------------------------------------------
class PathArgError(HooklabError):
    """A path argument cannot be used (missing folder, a folder where a file is expected, ...).

    Deliberately not a ``ValueError``: argparse would turn it into a multi-line usage error.
    """


def _probe_writable(folder: Path) -> str | None:
    """``None`` when a file can be created in ``folder``, else why not.

    A real probe, not ``os.access``: for root ``os.access`` says yes to /proc and /sys.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=".hooklab-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    os.unlink(name)
    return None


def check_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """Check that ``path`` can be written as a file, before any work; return it as a Path.

    Raises:
        PathArgError: ``path`` is a folder, its folder is missing or not a folder, or the folder
            does not accept new files.
    """
    p = Path(path)
    parent = p.parent
    if p.is_dir():
        raise PathArgError(f"{option} {p}: is a folder; give a file name")
    if not parent.exists():
        raise PathArgError(f"{option} {p}: folder {parent} does not exist")
    if not parent.is_dir():
        raise PathArgError(f"{option} {p}: {parent} is not a folder")
    why = _probe_writable(parent)
    if why is not None:
        raise PathArgError(f"{option} {p}: cannot write in folder {parent} ({why})")
    if p.exists() and not os.access(p, os.W_OK):
        raise PathArgError(f"{option} {p}: the file is read-only")
    return p


def check_output_file_or_dir(path: str | os.PathLike[str], option: str) -> Path:
    """Like :func:`check_output_file`, but an existing folder is accepted (a file goes in it)."""
    p = Path(path)
    if not p.is_dir():
        return check_output_file(p, option)
    why = _probe_writable(p)
    if why is not None:
        raise PathArgError(f"{option} {p}: cannot write in folder {p} ({why})")
    return p


def check_input_file(path: str | os.PathLike[str], option: str) -> Path:
    """Check that ``path`` is an existing, readable file; return it as a Path."""
    p = Path(path)
    if p.is_dir():
        raise PathArgError(f"{option} {p}: is a folder, not a file")
    if not p.exists():
        where = p.parent
        missing = ("no such file" if where.is_dir() else f"{where} is not a folder"
                   if where.exists() else f"folder {where} does not exist")
        raise PathArgError(f"{option} {p}: {missing}")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise PathArgError(f"{option} {p}: cannot read it ({exc.strerror or exc})") from None
    return p


def check_input_dir(path: str | os.PathLike[str], option: str) -> Path:
    """Check that ``path`` is an existing folder whose entries can be listed; return it."""
    p = Path(path)
    if not p.exists():
        raise PathArgError(f"{option} {p}: no such folder")
    if not p.is_dir():
        raise PathArgError(f"{option} {p}: is a file, not a folder")
    try:
        next(os.scandir(p), None)
    except OSError as exc:
        raise PathArgError(f"{option} {p}: cannot read it ({exc.strerror or exc})") from None
    return p


#: File suffixes that make a ``--weights`` value a path rather than a keyword ('shapes', ...).
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def check_weights(value: str, option: str) -> str:
    """A ``--weights`` value: a keyword ('shapes', 'random', 'imagenet', a torchvision weights
    name) passes through; anything that exists or looks like a path must be a readable file."""
    looks_like_path = (os.sep in value or "/" in value
                       or Path(value).suffix.lower() in WEIGHT_SUFFIXES)
    if os.path.lexists(value) or looks_like_path:
        check_input_file(value, option)
    return value


def check_store_dir(path: str | os.PathLike[str], option: str = "--store") -> Path:
    """Check that ``path`` is a store folder, or can be created as one; return it as a Path.

    An existing folder passes even when read-only (a read-only store can be listed and read).
    """
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise PathArgError(f"{option} {p}: is a file, not a folder")
        return p
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PathArgError(f"{option} {p}: {ancestor} is not a folder")
    why = _probe_writable(ancestor)
    if why is not None:
        raise PathArgError(f"{option} {p}: cannot create it in {ancestor} ({why})")
    return p


_CHECKS: dict[str, Callable[[str, str], object]] = {
    "output_file": check_output_file, "output_file_or_dir": check_output_file_or_dir,
    "input_file": check_input_file, "input_dir": check_input_dir, "weights": check_weights,
    "store": check_store_dir}


class PathArg(argparse.Action):
    """An argparse action that checks a path argument when it is parsed, i.e. before any work.

    ``kind`` names the check (:data:`PATH_KINDS`); the value stays the string given. Tests list
    every path argument of the CLI by looking for this action in the parser.

    Example:
        >>> p.add_argument("--out", action=PathArg, kind="output_file", metavar="PNG")
    """

    def __init__(self, option_strings: Sequence[str], dest: str, kind: str = "input_file",
                 **kwargs: Any) -> None:
        if kind not in _CHECKS:
            raise ValueError(f"path kind must be one of {PATH_KINDS}, got {kind!r}")
        super().__init__(option_strings, dest, **kwargs)
        self.kind = kind

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        name = option_string or (self.metavar if isinstance(self.metavar, str) else self.dest)
        _CHECKS[self.kind](values, name)
        setattr(namespace, self.dest, values)


#: The kinds of path argument :class:`PathArg` checks.
PATH_KINDS = tuple(_CHECKS)
