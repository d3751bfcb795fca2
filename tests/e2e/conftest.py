"""Browser-test harness: a real ``streamlit run`` server driven by Debian's Chromium (Playwright).

Fixtures:
    server   session: ``python -m streamlit run dashboard/app.py`` on a free localhost port with
             ``HOOKLAB_STORE`` in a temporary directory; yields the base URL; killed at the end.
    browser  session: Playwright Chromium at ``/usr/bin/chromium``. Missing -> skip, unless
             ``HOOKLAB_REQUIRE_BROWSER=1`` (CI), where it fails.
    page     function: a fresh browser context + page; on failure a full-page screenshot goes to
             ``test-artifacts/<test name>.png``.

Helpers ``wait_idle`` and ``open_page`` wait for
``[data-testid='stApp'][data-test-script-state='notRunning']``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
RUNNING = "[data-testid='stApp'][data-test-script-state='running']"
#: How long the app must stay idle before :func:`wait_idle` returns.
SETTLE_MS = 300
#: Generous: the first run of a page imports torch and may train the default model.
SLOW_MS = 90_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_health(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Poll ``<url>/_stcore/health`` until it answers (or the process dies / time runs out)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"streamlit did not become healthy at {url}: {last}")


def start_server(store: Path, port: int | None = None, log_path: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start the dashboard; returns (process, base URL). The process leads its own group."""
    port = port or free_port()
    env = dict(os.environ, HOOKLAB_STORE=str(store), PYTHONUNBUFFERED="1",
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    env.update(extra_env or {})
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py",
         "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_health(url, proc)
    except Exception:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate the server (and only its own process group), then kill if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def chromium_or_skip() -> str:
    """The Chromium path; skip (or, with ``HOOKLAB_REQUIRE_BROWSER=1`` as in CI, fail) when the
    browser or Playwright is missing."""
    import importlib.util

    if os.path.exists(CHROMIUM) and importlib.util.find_spec("playwright") is not None:
        return CHROMIUM
    msg = (f"{CHROMIUM} not found (apt-get install chromium) - browser tests need Debian's "
           "Chromium" if not os.path.exists(CHROMIUM) else
           "playwright is not installed (pip install -r requirements-dev.txt)")
    if os.environ.get("HOOKLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(msg)
    pytest.skip(msg)
    raise AssertionError  # unreachable


def wait_idle(page, timeout: int = SLOW_MS, started_ms: int = 1500) -> None:
    """Wait until the script run a user action triggered has finished.

    Gives the rerun up to ``started_ms`` to begin (it may already have finished), then waits for
    the app to report ``notRunning``.
    """
    try:
        page.wait_for_selector(RUNNING, timeout=started_ms)
    except Exception:  # the run may be over already
        pass
    page.wait_for_selector(IDLE, timeout=timeout)
    # A run can end and the next one (a rerun the script asked for, or the first run when the
    # websocket was slow to connect) begin between two polls: idle counts once it has held for
    # SETTLE_MS. What a test reads right after still uses a waiting assertion where it can.
    while True:
        page.wait_for_timeout(SETTLE_MS)
        if page.locator(IDLE).count() == 1:
            return
        page.wait_for_selector(IDLE, timeout=timeout)


def open_page(page, url: str, timeout: int = SLOW_MS) -> None:
    """Navigate and wait for the first script run to finish."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout)
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    # Before the websocket connects the app already says "notRunning": wait for the page's
    # title (every hooklab page starts with st.title), then for the run to end.
    page.wait_for_selector("[data-testid='stMain'] h1", timeout=timeout)
    wait_idle(page, timeout=timeout, started_ms=1000)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return chromium_or_skip()


def warm_default_model() -> None:
    """Train (or load) the default model before the browser waits for it: on a cold cache the
    first Run would otherwise spend its timeout training. Same cache as the server
    (``$HOOKLAB_CACHE``, default ``./.hooklab-cache`` in the project)."""
    cwd = os.getcwd()
    os.chdir(ROOT)  # the default cache path is relative to the server's working directory
    try:
        from hooklab.studies.train import trained_model

        trained_model()
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def server(chromium_path, tmp_path_factory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("e2e")
    ARTIFACTS.mkdir(exist_ok=True)
    warm_default_model()
    proc, url = start_server(base / "store", log_path=ARTIFACTS / "e2e-server.log")
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def browser(chromium_path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def context(browser, request) -> Iterator[object]:
    """A fresh browser context (no cookies, no session): as a colleague opening a link."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(SLOW_MS)
    try:
        yield ctx
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            for i, pg in enumerate(ctx.pages):
                try:
                    pg.screenshot(path=str(ARTIFACTS / f"{name}-{i}.png"), full_page=True)
                except Exception:  # best effort
                    pass
        ctx.close()


@pytest.fixture
def page(context) -> object:
    return context.new_page()


@pytest.fixture(scope="session")
def ui():
    """The helpers as a fixture (test modules cannot import a conftest by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(open_page=open_page, wait_idle=wait_idle, SLOW_MS=SLOW_MS)
