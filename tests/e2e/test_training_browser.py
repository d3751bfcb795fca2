"""The Training page in a real Chromium against a real ``streamlit run``, on a store holding runs
written by ``hooklab.watch``: a finished run's heatmap is drawn, and a live run updates itself
(the page's ``st.fragment(run_every=...)``) while the training goes on, with no user action.

The server is this module's own (the shared ``server`` fixture's store is not reachable from
here), started with the conftest's helpers on a store written first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import hooklab
from hooklab.models.zoo import seed_model
from hooklab.store.runs import TraceStore
from tests.e2e.conftest import ARTIFACTS, SLOW_MS, start_server, stop_server

pytestmark = pytest.mark.e2e

CHART = "[data-testid='stPlotlyChart']"


def _train(w, model, steps: int) -> None:
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 3])
    for _ in range(steps):
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        w.step(loss=loss.item())


@pytest.fixture(scope="module")
def training_server(chromium_path, tmp_path_factory) -> Iterator[tuple[str, TraceStore, str]]:
    """A dashboard on a store with one finished watch run: (url, store, run id)."""
    store = TraceStore(tmp_path_factory.mktemp("e2e-training") / "store")
    model = seed_model()
    with hooklab.watch(model, store, every=1, segment_steps=2,
                       meta={"model": "simple_model"}) as w:
        _train(w, model, 6)
    ARTIFACTS.mkdir(exist_ok=True)
    proc, url = start_server(store.root, log_path=ARTIFACTS / "e2e-training-server.log")
    try:
        yield url, store, str(w.run_id)
    finally:
        stop_server(proc)


def _main(page):
    return page.locator("[data-testid='stMain']")


def _no_error(page) -> None:
    errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
    assert errors.count() == 0, errors.first.inner_text()


def _recorded_steps(page) -> str:
    metric = _main(page).locator("[data-testid='stMetric']").filter(has_text="Recorded steps")
    return metric.locator("[data-testid='stMetricValue']").inner_text().strip()


def test_training_page_shows_the_heatmap(training_server, page, ui):
    url, _store, rid = training_server
    ui.open_page(page, f"{url}/training?run={rid}")
    main = _main(page)
    main.get_by_text(re.compile(rf"Run {rid} · finished")).first.wait_for(timeout=SLOW_MS)
    chart = main.locator(CHART).filter(has_text="Output gradient norm per layer").first
    chart.wait_for(timeout=SLOW_MS)
    chart.locator(".heatmaplayer image, .hm image").first.wait_for(state="attached",
                                                                   timeout=SLOW_MS)
    for layer in ("conv", "relu", "fc"):  # the layer axis
        chart.get_by_text(layer, exact=True).first.wait_for(timeout=SLOW_MS)
    assert _recorded_steps(page) == "6"
    main.locator(CHART).filter(has_text="Training: loss").first.wait_for(timeout=SLOW_MS)
    _no_error(page)


def test_a_live_run_updates_itself(training_server, page, ui):
    url, store, _ = training_server
    model = seed_model()
    with hooklab.watch(model, store, every=1, segment_steps=1,
                       meta={"model": "simple_model"}) as w:
        _train(w, model, 2)
        assert w.flush()  # segments are written by a background thread: wait for them
        ui.open_page(page, f"{url}/training?run={w.run_id}")
        main = _main(page)
        main.get_by_text(re.compile(rf"Run {w.run_id} · ● live")).first.wait_for(
            timeout=SLOW_MS)
        assert _recorded_steps(page) == "2"
        _train(w, model, 3)  # the training goes on; nobody touches the page
        page.wait_for_function(
            """() => [...document.querySelectorAll("[data-testid='stMetric']")]
                   .some(m => m.innerText.includes("Recorded steps")
                              && m.innerText.includes("5"))""", timeout=30_000)
    # the with block closed: the run is finished, and the page says so on its next refresh
    main.get_by_text(re.compile(rf"Run {w.run_id} · finished")).first.wait_for(timeout=30_000)
    _no_error(page)
