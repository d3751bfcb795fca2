"""The machine a computation ran on: CPU model, the ISA torch uses, threads, torch version.

Float rounding differs between CPUs and thread counts, so the shipped default weights record
:func:`machine_info` of the machine that trained them, and every script in ``benchmarks/`` prints
:func:`machine_line` first (through ``benchmarks/_machine.py``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip() or "unknown CPU"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, object]:
    """CPU model, ISA torch dispatches to, torch threads, torch version, core count."""
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.1
        isa = "unknown"
    return {"cpu": cpu_model(), "isa": isa, "threads": torch.get_num_threads(),
            "cores": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_line() -> str:
    """``machine: <cpu> | torch ISA <isa> | <n> torch threads (<c> cores) | torch <version>``."""
    m = machine_info()
    gpu = f" | GPU {m['cuda']}" if m["cuda"] else ""
    return (f"machine: {m['cpu']} | torch ISA {m['isa']} | {m['threads']} torch threads "
            f"({m['cores']} cores) | torch {m['torch']}{gpu}")
