"""The Grad-CAM page's trust views in a real Chromium: CAMs over training (the bias
experiment) render as an animated Plotly figure with a step slider and a play button, and
playing it ends on another frame (step 150); the layer sweep shows its recommendation.

The sanity strip (the maps as the layers are randomised from the top, with their similarity, and
the data-randomisation pair) is drawn with its verdict in words. With ``HOOKLAB_SCREENSHOTS=1``
the animation and the strip are saved as ``docs/img/cam_training.png`` and
``docs/img/sanity_strip.png``.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.e2e.conftest import ROOT, SLOW_MS

pytestmark = pytest.mark.e2e

CHART = "[data-testid='stPlotlyChart']"
LONG_MS = 4 * SLOW_MS  # the first run trains the biased arm with checkpoints (then cached)


def _main(page):
    return page.locator("[data-testid='stMain']")


def _no_error(page) -> None:
    errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
    assert errors.count() == 0, errors.first.inner_text()


def _warm_checkpoints() -> None:
    """Keep the biased arm's checkpoints in the server's cache before the browser waits."""
    cwd = os.getcwd()
    os.chdir(ROOT)  # the default cache path is relative to the server's working directory
    try:
        from dashboard.components.cam_trust import TRAIN_STEPS
        from hooklab.studies import bias, cam_training

        cam_training.train_checkpoints(bias.arm_config("biased"), TRAIN_STEPS)
    finally:
        os.chdir(cwd)


def _section(page, ui, label: str) -> None:
    _main(page).get_by_text(label, exact=True).click()
    ui.wait_idle(page)


def test_cams_over_training_animate_in_chromium(server, page, ui):
    _warm_checkpoints()
    ui.open_page(page, server + "/gradcam")
    _section(page, ui, "CAMs over training")
    _main(page).get_by_role("button", name="Train and animate").click()
    ui.wait_idle(page, timeout=LONG_MS)
    _no_error(page)
    chart = _main(page).locator(CHART).filter(has=page.locator(".slider-container")).first
    chart.wait_for(timeout=SLOW_MS)
    assert chart.locator(".updatemenu-button").count() >= 2  # play and pause
    title = chart.locator(".gtitle").first
    assert re.search(r"step 0: max on the marker", title.text_content())
    images = chart.locator("image")
    first = images.first.get_attribute("href") or images.first.get_attribute("xlink:href")
    assert chart.locator(".slider-group").count() >= 1  # the step slider
    chart.locator(".updatemenu-button").first.click()  # play: through every frame to the end
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].some(e => /step 150:/.test(e.textContent))",
        arg=f"{CHART} .gtitle", timeout=SLOW_MS)
    later = images.first.get_attribute("href") or images.first.get_attribute("xlink:href")
    assert later != first  # another frame's overlays
    assert re.search(r"step 150: max on the marker", title.text_content())
    # the location curves beside it
    curves = _main(page).locator(CHART).filter(has_text="max on the marker")
    assert curves.count() >= 1
    if os.environ.get("HOOKLAB_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        chart.screenshot(path=str(ROOT / "docs" / "img" / "cam_training.png"))


def test_layer_sweep_recommends_a_layer_in_chromium(server, page, ui):
    ui.open_page(page, server + "/gradcam")
    _section(page, ui, "Layer sweep")
    _main(page).get_by_role("button", name="Run the layer sweep").click()
    ui.wait_idle(page, timeout=LONG_MS)
    _no_error(page)
    _main(page).get_by_text(re.compile(r"Recommended layer: conv\d")).first.wait_for(
        timeout=SLOW_MS)
    _main(page).get_by_role("button", name=re.compile(r"Use this layer")).click()
    ui.wait_idle(page)
    _no_error(page)
    _main(page).get_by_text(re.compile(r"Layer: conv\d")).first.wait_for(timeout=SLOW_MS)


def test_sanity_strip_in_chromium(server, page, ui):
    """The cascade strip (original + one map per randomised layer, each with its similarity),
    the verdict in words, and the data-randomisation pair beside it."""
    ui.open_page(page, server + "/gradcam")
    _section(page, ui, "Sanity checks")
    _main(page).get_by_role("button", name="Run the sanity checks").click()
    ui.wait_idle(page, timeout=LONG_MS)
    _no_error(page)
    strip = _main(page).locator(CHART).filter(has_text="SSIM").first
    strip.wait_for(timeout=SLOW_MS)
    # original + fc2, fc1, conv3, conv2, conv1, then the true / shuffled labels pair
    assert strip.locator("image").count() == 8
    for layer in ("original", "fc2", "fc1", "conv3", "conv2", "conv1", "true labels",
                  "shuffled labels"):
        assert strip.get_by_text(re.compile(rf"^{layer}$")).count() >= 1
    _main(page).get_by_text(re.compile(r"layers randomised, Spearman")).first.wait_for()
    _main(page).get_by_text(re.compile(r"^Expected: A faithful method's maps fall apart")
                            ).first.wait_for()
    _main(page).get_by_text(re.compile(r"shuffled labels vs true labels")).first.wait_for()
    if os.environ.get("HOOKLAB_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        strip.screenshot(path=str(ROOT / "docs" / "img" / "sanity_strip.png"))
