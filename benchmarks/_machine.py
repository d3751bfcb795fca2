"""The machine line every benchmark prints first (one helper: :mod:`hooklab.core.machine`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hooklab.core.machine import cpu_model, machine_info, machine_line  # noqa: E402,F401

__all__ = ["cpu_model", "machine_info", "machine_line", "rss", "status_bytes"]


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status in bytes (Linux): ``VmRSS``, ``VmHWM``, ..."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def rss() -> int:
    """This process's resident memory in bytes (``VmRSS``)."""
    return status_bytes("VmRSS")
