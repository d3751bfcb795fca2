"""The command line: ``hooklab ...`` / ``python -m hooklab ...``."""

from __future__ import annotations

from hooklab.cli.main import main

__all__ = ["main"]
