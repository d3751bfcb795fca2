"""The browser tests' server and browser helpers (``tests/e2e/conftest.py``) for the scripts
here that drive the dashboard in Debian's Chromium (``bench_dashboard.py``,
``screenshot_vit.py``): one place that loads them and starts a served dashboard and a browser.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("e2e_harness",
                                               ROOT / "tests" / "e2e" / "conftest.py")
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)  # the same server/browser helpers as the browser tests


def chromium_missing() -> bool:
    """True (and says so on stderr) when Debian's Chromium is not installed."""
    if os.path.exists(harness.CHROMIUM):
        return False
    print(f"{harness.CHROMIUM} not found: install Debian's chromium", file=sys.stderr)
    return True


@contextlib.contextmanager
def served_dashboard() -> Iterator[tuple[Any, str]]:
    """``(browser, url)``: ``streamlit run dashboard/app.py`` on a free localhost port with a
    temporary run store, and Chromium launched by Playwright; both stopped on exit."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = harness.start_server(Path(tmp) / "store", log_path=Path(tmp) / "server.log")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=harness.CHROMIUM,
                                             args=harness.CHROMIUM_ARGS)
                try:
                    yield browser, url
                finally:
                    browser.close()
        finally:
            harness.stop_server(proc)
