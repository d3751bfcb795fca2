"""Shared by the registry tests (library, CLI, dashboard): a registry restored after each test
and the example lab package imported from examples/ without installing it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hooklab.models import registry

ROOT = Path(__file__).resolve().parents[2]
#: The example lab package's folder (what ``PYTHONPATH`` names to use it uninstalled).
LAB = ROOT / "examples" / "hooklab_example_lab"
#: Its model module (what ``HOOKLAB_MODELS`` names).
LAB_MODULE = "hooklab_example_lab.models"


@contextmanager
def saved_registry(entry_points: bool = False) -> Iterator[None]:
    """Restore the registry (models, load errors, the loaded-env memo) afterwards; unless
    ``entry_points``, installed packages' entry points are kept out."""
    with registry._LOCK:
        saved = (dict(registry._REGISTRY), dict(registry._ERRORS), dict(registry._ENV_LOADED),
                 registry._ENTRY_POINTS_LOADED)
        if not entry_points:
            registry._ENTRY_POINTS_LOADED = True
    try:
        yield
    finally:
        with registry._LOCK:
            registry._REGISTRY.clear()
            registry._REGISTRY.update(saved[0])
            registry._ERRORS.clear()
            registry._ERRORS.update(saved[1])
            registry._ENV_LOADED.clear()
            registry._ENV_LOADED.update(saved[2])
            registry._ENTRY_POINTS_LOADED = saved[3]


def forget_lab() -> None:
    """Drop the example package from ``sys.modules`` (the next import registers it again)."""
    for name in [m for m in sys.modules if m.startswith("hooklab_example_lab")]:
        sys.modules.pop(name)
