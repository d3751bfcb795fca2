"""Recording: :func:`record` is the only code in hooklab that registers hooks on a model."""

from __future__ import annotations

from hooklab.recording.recorder import (
    EditSpec,
    Recorder,
    record,
    scalar_loss,
)

__all__ = [
    "EditSpec",
    "Recorder",
    "record",
    "scalar_loss",
]
