"""hooklab's version, from the installed package's metadata (``pyproject.toml``)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("hooklab")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
