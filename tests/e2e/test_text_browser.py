"""A run's text is shown as text, in a real Chromium (issue 16), and the served app's hardening.

A local HTTP server on a free 127.0.0.1 port logs every request it gets. The store holds a run
whose author is ``![y](<that server>/pixel.png)`` and whose model name, notes and tags are
``![x](<that server>/pixel.png) [open results](<that server>/phish)``, and a watched training run
by the same author. Chromium opens the Inspector banner, the Runs list and detail, Compare and
Training for them: the pixel server's log stays empty, the literal text is visible, and no link
(HTML ``<a href>`` or Plotly's SVG ``<a xlink:href>``) to the server exists.

Then the hardening as served: a run zip uploads through the page with XSRF protection on, and an
upload without the XSRF token is refused (403).
"""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import hooklab
from hooklab.models.zoo import SimpleCNN, seed_model
from hooklab.store.runs import TraceStore
from tests.e2e.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    SLOW_MS,
    free_port,
    start_server,
    stop_server,
    warm_default_model,
)

pytestmark = pytest.mark.e2e

#: Every request the pixel server got: (method, path).
REQUESTS: list[tuple[str, str]] = []


class _Logger(http.server.BaseHTTPRequestHandler):
    """Logs every request (any method) and answers 404."""

    def _log(self) -> None:
        REQUESTS.append((self.command, self.path))
        self.send_response(404)
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_PUT = do_OPTIONS = _log

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def pixel_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Logger)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def hostile(chromium_path, pixel_server, tmp_path_factory):
    """(url, store, run id, training run id, img text, phish text): a dashboard on a store with
    the hostile runs."""
    img = f"![y]({pixel_server}/pixel.png)"
    phish = f"![x]({pixel_server}/pixel.png) [open results]({pixel_server}/phish)"
    store = TraceStore(tmp_path_factory.mktemp("e2e-text") / "store")
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with hooklab.record(model, meta={"model": phish, "author": img, "page": "inspector"}) as rec:
        rec.run(x)
    rid = store.save(rec.trace, author=img, notes=phish, tags=[img, phish])
    small = seed_model()
    xs = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 3])
    with hooklab.watch(small, store, every=1, segment_steps=1, author=img,
                       meta={"model": phish}) as w:
        for _ in range(3):
            small.zero_grad()
            loss = F.cross_entropy(small(xs), y)
            loss.backward()
            w.step(loss=loss.item())
    warm_default_model()
    ARTIFACTS.mkdir(exist_ok=True)
    proc, url = start_server(store.root, log_path=ARTIFACTS / "e2e-text-server.log")
    try:
        yield url, store, rid, str(w.run_id), img, phish
    finally:
        stop_server(proc)


def _links_to(page, base: str) -> list[str]:
    """Every link on the page (HTML href or SVG xlink:href) that points at ``base``."""
    hrefs = page.evaluate("""() => [...document.querySelectorAll('a')].map(a =>
        a.getAttribute('href') || a.getAttribute('xlink:href') ||
        a.getAttributeNS('http://www.w3.org/1999/xlink', 'href') || '')""")
    return [h for h in hrefs if base.split("//", 1)[1] in h]


def _check(page, base: str, *literal: str) -> None:
    page.wait_for_timeout(1500)  # images would have been requested by now
    assert not _links_to(page, base), _links_to(page, base)
    assert page.locator(f"img[src*='{base.split('//', 1)[1]}']").count() == 0
    main = page.locator("[data-testid='stMain']")
    for text in literal:
        main.get_by_text(text, exact=False).filter(visible=True).first.wait_for(timeout=SLOW_MS)
    assert REQUESTS == [], REQUESTS


@pytest.mark.parametrize("path", ["/inspector?run={rid}", "/runs?run={rid}", "/compare?run={rid}",
                                  "/training?run={wid}", "/?run={rid}"])
def test_a_hostile_run_is_shown_as_text(hostile, pixel_server, page, ui, path):
    url, _, rid, wid, img, phish = hostile
    ui.open_page(page, url + path.format(rid=rid, wid=wid))
    _check(page, pixel_server, img, phish)  # banner / detail / header: author and model


def test_the_runs_list_makes_no_request(hostile, pixel_server, page, ui):
    url, _, _, _, img, phish = hostile
    ui.open_page(page, url + "/runs")
    main = page.locator("[data-testid='stMain']")
    main.get_by_text("Runs over time").click()  # the timeline: authors, pages, notes in hover
    ui.wait_idle(page)
    main.locator("[data-testid='stPlotlyChart']").first.wait_for(timeout=SLOW_MS)
    _check(page, pixel_server)
    assert main.locator("[data-testid='stDataFrame']").count() >= 1  # cells: plain text


def test_upload_works_with_xsrf_on_and_needs_the_token(hostile, page, ui, tmp_path):
    url, store, rid, _, _, _ = hostile
    zipped = store.export(rid, tmp_path / "run.zip")
    before = set(store.list()["run_id"])
    ui.open_page(page, url + "/runs")
    main = page.locator("[data-testid='stMain']")
    box = main.locator("[data-testid='stFileUploader']").filter(has_text="Run file")
    box.locator("input[type='file']").set_input_files(str(zipped))
    ui.wait_idle(page)
    main.get_by_role("button", name="Import", exact=True).click()
    ui.wait_idle(page)
    main.get_by_text("Imported as run").first.wait_for(timeout=SLOW_MS)
    assert len(set(store.list()["run_id"]) - before) == 1
    # the same upload route without the XSRF cookie's token: refused before anything is read
    req = urllib.request.Request(f"{url}/_stcore/upload_file/any-session/any-file", data=b"x",
                                 method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403


def test_a_host_name_not_allowed_gets_no_app(hostile, browser, ui):
    """DNS rebinding: a page served under another name that resolves to this server (here
    Chromium maps ``rebound.example`` to 127.0.0.1) gets no WebSocket (``allowedHosts``), so it
    cannot drive the app; the same server under 127.0.0.1 works (the other tests)."""
    url = hostile[0]
    port = url.rsplit(":", 1)[1]
    other = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS,
                                             "--host-resolver-rules=MAP rebound.example 127.0.0.1"])
    try:
        page = other.new_page()
        page.goto(f"http://rebound.example:{port}/runs", wait_until="domcontentloaded")
        page.wait_for_selector("[data-testid='stApp']", timeout=SLOW_MS)  # the HTML is served...
        page.wait_for_timeout(5000)
        assert page.locator("[data-testid='stMain'] h1").count() == 0  # ...but no page runs
        assert page.get_by_text("Runs", exact=True).count() == 0
    finally:
        other.close()
