"""The machine line every benchmark prints first (one helper: :mod:`hooklab.core.machine`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hooklab.core.machine import cpu_model, machine_info, machine_line  # noqa: E402,F401

__all__ = ["cpu_model", "machine_info", "machine_line"]
