"""In a real Chromium: pick ``simple_vit`` on the Grad-CAM page and see its map (the shipped
weights, the automatic layer, the three panels), with no error on the page."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e
#: Playwright's waiting assertions (the module is skipped where Playwright is not installed).
expect = pytest.importorskip("playwright.sync_api").expect

CHART = "[data-testid='stPlotlyChart']"
ERRORS = "[data-testid='stException'], [data-testid='stAlertContentError']"
SLOW_MS = 120_000


def pick_simple_vit(page, ui) -> None:
    """Choose simple_vit in the page's model selectbox and wait for the rerun."""
    main = page.locator("[data-testid='stMain']")
    box = main.locator("[data-testid='stSelectbox']").filter(has_text="Model").first
    box.click()
    page.get_by_role("option", name="simple_vit", exact=True).click()
    ui.wait_idle(page, timeout=SLOW_MS)
    expect(box.locator("input").first).to_have_value("simple_vit", timeout=SLOW_MS)


def test_gradcam_page_draws_a_map_for_simple_vit(server, page, ui):
    ui.open_page(page, server + "/gradcam")
    pick_simple_vit(page, ui)
    main = page.locator("[data-testid='stMain']")
    overlay = main.locator(CHART).filter(has_text="Overlay").first
    overlay.wait_for(timeout=SLOW_MS)
    assert overlay.locator(".heatmaplayer, .imagelayer, image").count() >= 1
    expect(main.get_by_text(re.compile(r"Layer:"))).not_to_have_count(0)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).all_inner_texts()
