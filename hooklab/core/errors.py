"""Errors raised by hooklab.

Every error a user can cause derives from :class:`HooklabError`, so the dashboard and the CLI
catch exactly one type and show its message. Subclasses also derive from the built-in type a
Python user would expect (``ValueError`` for a bad name, ``TypeError`` for a bad type), so
``except ValueError`` keeps working.
"""

from __future__ import annotations


class HooklabError(Exception):
    """Base class for every error hooklab raises on purpose."""


class LayerNotFoundError(HooklabError, ValueError):
    """A layer name, glob or type matched nothing in the model."""


class HookKindError(HooklabError, RuntimeError):
    """PyTorch refused a hook kind on a module; the message says why and what to use."""


class EditError(HooklabError, ValueError):
    """An edit spec is malformed or cannot be applied."""


class StoreError(HooklabError, OSError):
    """A trace store operation failed (unknown run, bad id, unwritable root)."""


class CorruptRunError(StoreError):
    """A run directory or exported run file is incomplete, tampered with or of an unknown version."""


class UnsafeCheckpointError(HooklabError, ValueError):
    """A checkpoint would need arbitrary code (a full pickle) to load; it was refused."""


class WeightsMismatchError(HooklabError, ValueError):
    """Weights do not fit the model: missing or unexpected keys, or wrong shapes."""


class ImageError(HooklabError, ValueError):
    """A file is not a readable image, or is too large to decode safely."""


class NonSpatialLayerError(HooklabError, ValueError):
    """A CAM was asked of a layer without a spatial (N, C, H, W) output."""


class DataError(HooklabError, ValueError):
    """A data set is missing or malformed (e.g. no local CIFAR-10 copy)."""
