"""The ``HOOKLAB_MODELS`` module of the edit-sweep tests: importing it registers the faulty
models of :mod:`hooklab.testing.sweep_faults` (in the test process and in Ray workers)."""

from __future__ import annotations

from hooklab.testing.sweep_faults import register

register()
