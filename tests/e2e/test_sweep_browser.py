"""The Runs page in a real Chromium against a real ``streamlit run``, on a store holding a small
in-process edit sweep and a small evaluation: a trial's link shows the sweep's comparison view
(trials table, accuracy and ratio charts), an evaluation's link its summary and chart; no
exception or error box on either page.

The server is this module's own (started with the conftest's helpers on a store written first).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from hooklab.store.runs import TraceStore
from hooklab.studies.evaluation import evaluate
from hooklab.studies.sweep import sweep_edits
from tests.e2e.conftest import ARTIFACTS, SLOW_MS, start_server, stop_server

pytestmark = pytest.mark.e2e

CHART = "[data-testid='stPlotlyChart']"
ERRORS = "[data-testid='stException'], [data-testid='stAlertContentError']"


@pytest.fixture(scope="module")
def lab_server(chromium_path, tmp_path_factory) -> Iterator[tuple[str, str, str]]:
    """A dashboard on a store with a sweep and an evaluation: (url, trial run id, eval id)."""
    store = TraceStore(tmp_path_factory.mktemp("e2e-sweep") / "store")
    sweep = sweep_edits(["", "conv2=scale(0.5)"], seeds=(0,), store=store, in_process=True,
                        steps=4, n_train=64, batch_size=16, n_test=32)
    ev = evaluate("simple_cnn", "shapes", n=8, batch_size=4, methods=["gradcam"],
                  metrics=["deletion", "insertion", "pointing"], steps=8, store=store)
    ARTIFACTS.mkdir(exist_ok=True)
    proc, url = start_server(store.root, log_path=ARTIFACTS / "e2e-sweep-server.log")
    try:
        yield url, str(sweep.trials["run_id"].iloc[1]), ev.run_id
    finally:
        stop_server(proc)


def _main(page):
    return page.locator("[data-testid='stMain']")


def test_a_trial_link_shows_the_sweep_comparison(lab_server, page, ui):
    from playwright.sync_api import expect

    url, trial_run, _ = lab_server
    ui.open_page(page, f"{url}/runs?run={trial_run}")
    main = _main(page)
    expect(main.get_by_role("heading", name="Edit sweeps")).to_be_visible(timeout=SLOW_MS)
    acc = main.locator(CHART).filter(has_text="Final test accuracy per configuration")
    expect(acc.first).to_be_visible(timeout=SLOW_MS)
    ratio = main.locator(CHART).filter(has_text="norm ratio to the no-edit trial")
    expect(ratio.first).to_be_visible(timeout=SLOW_MS)
    expect(ratio.first.get_by_text("t1 conv2=scale(0.5) · seed 0").first).to_be_visible(
        timeout=SLOW_MS)
    for layer in ("conv1", "conv2", "fc1"):  # a panel per layer
        expect(ratio.first.get_by_text(layer, exact=True).first).to_be_visible(timeout=SLOW_MS)
    expect(main.locator(ERRORS)).to_have_count(0)


def test_an_evaluation_link_shows_its_summary(lab_server, page, ui):
    from playwright.sync_api import expect

    url, _, eval_run = lab_server
    ui.open_page(page, f"{url}/runs?run={eval_run}")
    main = _main(page)
    expect(main.get_by_role("heading", name="Evaluation")).to_be_visible(timeout=SLOW_MS)
    expect(main.get_by_text("Finished: all 8 images scored.")).to_be_visible(timeout=SLOW_MS)
    expect(main.get_by_text(re.compile(r"mean ± sd over 8 images"))).to_be_visible(
        timeout=SLOW_MS)
    box = main.locator(CHART).filter(has_text="deletion_auc (lower is better)")
    expect(box.first).to_be_visible(timeout=SLOW_MS)
    expect(main.get_by_role("button", name="Per-image table (.csv)")).to_be_visible(
        timeout=SLOW_MS)
    expect(main.locator(ERRORS)).to_have_count(0)
