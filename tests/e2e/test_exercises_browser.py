"""Issue 15 in a real Chromium: the backward graph with its hooks renders as SVG (drawn in the
browser from DOT, no system Graphviz), an exercise round trip (wrong, right, saved), the CAM
exercise reveals the map, and a click on the image picks a pixel.

With ``HOOKLAB_SCREENSHOTS=1`` the graph and the CAM exercise are saved to docs/img/graph.png
and docs/img/exercise.png (the README's screenshots).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SLOW_MS = 90_000
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
SHOTS = os.environ.get("HOOKLAB_SCREENSHOTS") == "1"


def _main(page):
    return page.locator("[data-testid='stMain']")


def _no_error(page) -> None:
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, errors.first.inner_text()


def _shot(locator, name: str) -> None:
    if SHOTS:
        IMG.mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(IMG / name))


def test_graph_renders_as_svg_with_numbered_hooks(server, page, ui):
    ui.open_page(page, server + "/")
    chart = _main(page).locator("[data-testid='stGraphVizChart']")
    chart.scroll_into_view_if_needed()
    svg = chart.locator("svg")
    svg.first.wait_for(timeout=SLOW_MS)
    texts = svg.first.locator("text").evaluate_all("els => els.map(e => e.textContent)")
    assert "edit: scale(0.5)" in texts
    assert any(t.startswith("① ") for t in texts) and any(t.startswith("③ ") for t in texts)
    assert svg.first.locator("g.node").count() >= 20  # the SimpleCNN's autograd nodes + hooks
    assert svg.first.locator("g.cluster").count() >= 3  # conv1, conv2, conv3 boxes
    _no_error(page)
    _shot(chart, "graph.png")


def test_exercise_round_trip(server, page, ui):
    ui.open_page(page, server + "/")
    box = page.locator(".st-key-hook_basics_ex_tensor-k_box")
    box.scroll_into_view_if_needed()
    answer = box.get_by_label("Your x.grad")
    answer.fill("100")
    answer.press("Enter")
    ui.wait_idle(page)
    box.get_by_role("button", name="Check").click()
    ui.wait_idle(page)
    box.get_by_text(re.compile(r"Not quite\.")).wait_for(timeout=SLOW_MS)
    answer.fill("96")
    answer.press("Enter")
    ui.wait_idle(page)
    box.get_by_role("button", name="Check").click()
    ui.wait_idle(page)
    box.get_by_text(re.compile(r"Right!")).wait_for(timeout=SLOW_MS)
    box.get_by_text(re.compile(r"48 · 0\.5 · 4 = 96")).wait_for(timeout=SLOW_MS)
    box.get_by_role("button", name="Save my answer").click()
    ui.wait_idle(page)
    box.get_by_text(re.compile(r"Saved as run \d{8}-\d{6}-[0-9a-f]{8}")).wait_for(
        timeout=SLOW_MS)
    _no_error(page)


def test_cam_exercise_click_and_reveal(server, page, ui):
    from hooklab.studies import exercises

    peak = exercises.truth(exercises.load_set().get("cam-peak"))
    ui.open_page(page, server + "/")
    box = page.locator(".st-key-hook_basics_ex_cam-peak_box")
    box.scroll_into_view_if_needed()
    chart = box.locator("[data-testid='stPlotlyChart']").first
    chart.wait_for(timeout=SLOW_MS)
    area = chart.locator(".nsewdrag").first  # plotly's plot area
    bb = area.bounding_box()
    assert bb is not None
    page.mouse.click(bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2)
    ui.wait_idle(page)
    row = box.get_by_label("row")
    col = box.get_by_label("column")
    clicked = row.input_value()
    assert clicked != "" and 8 <= int(clicked) <= 24, clicked  # near the centre of 32 pixels
    row.fill(str(peak[0]))
    row.press("Enter")
    ui.wait_idle(page)
    col.fill(str(peak[1]))
    col.press("Enter")
    ui.wait_idle(page)
    box.get_by_role("button", name="Check").click()
    ui.wait_idle(page)
    box.get_by_text(re.compile(r"Right!")).wait_for(timeout=SLOW_MS)
    assert box.locator("[data-testid='stPlotlyChart']").count() == 2  # the revealed CAM
    _no_error(page)
    if SHOTS:  # tall enough for the whole exercise, the revealed map included
        page.set_viewport_size({"width": 1100, "height": 1900})
        box.scroll_into_view_if_needed()
        _shot(box, "exercise.png")
