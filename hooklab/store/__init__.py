"""The trace store: one immutable run directory per run, atomic commit, listing, zip archive."""

from __future__ import annotations

from hooklab.store.runs import (
    DEFAULT_ROOT,
    ENV_VAR,
    LIST_COLUMNS,
    TraceStore,
    default_root,
    normalise_tags,
    summarise_edits,
)

__all__ = [
    "DEFAULT_ROOT",
    "ENV_VAR",
    "LIST_COLUMNS",
    "TraceStore",
    "default_root",
    "normalise_tags",
    "summarise_edits",
]
