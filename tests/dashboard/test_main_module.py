"""After an AppTest, a multiprocessing child still runs its target (the real ``__main__`` is back).

Streamlit's script runner installs the page as ``sys.modules["__main__"]``; a spawned or
forkserver child imports the parent's ``__main__`` first, so with the page left there it ran the
page script instead of its target. The autouse fixture in conftest.py puts the real one back.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

from tests.dashboard.conftest import run_page

PAGE = str(Path(__file__).resolve().parents[2] / "dashboard" / "views" / "hook_basics.py")


_SEEN: dict[str, object] = {}


def _child(q) -> None:
    q.put("ran")


def test_a_page_run_replaces_the_main_module(store_dir):
    """What Streamlit does (why the fixture exists); the fixture undoes it at teardown."""
    _SEEN["main"] = sys.modules["__main__"]
    at = run_page(PAGE, 120)
    assert not at.exception
    assert sys.modules["__main__"] is not _SEEN["main"]
    _SEEN["page_main"] = sys.modules["__main__"]


def test_a_spawned_child_runs_its_target_after_an_apptest():
    """Runs after the test above (file order): the real __main__ is back, so the child runs."""
    assert "page_main" in _SEEN, "run with the test above: it leaves the page as __main__"
    assert sys.modules["__main__"] is _SEEN["main"]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    assert q.get(timeout=5) == "ran"
