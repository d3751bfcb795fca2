"""The trace store: one immutable run directory per run, atomic commit, listing, zip archive."""

from __future__ import annotations

from hooklab.store.access import Identity, LabPolicy, PermissionDenied
from hooklab.store.audit import AuditReport
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
    "AuditReport",
    "DEFAULT_ROOT",
    "Identity",
    "LabPolicy",
    "PermissionDenied",
    "ENV_VAR",
    "LIST_COLUMNS",
    "TraceStore",
    "default_root",
    "normalise_tags",
    "summarise_edits",
]
