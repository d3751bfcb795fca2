"""The dashboard as a new user meets it, in a real Chromium against a real ``streamlit run``.

Scenario: open the app; on Hook basics halve the gradient and see 96; run the Inspector on the
defaults and see the timeline; see the three Grad-CAM panels; save a run; find it on Runs; open
its share link in a fresh browser context (a colleague) and see the same run.

Selectors are visible text and roles (labels as a user reads them), never generated class names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{8}\b")
CHART = "[data-testid='stPlotlyChart']"
SLOW_MS = 90_000


def _main(page):
    return page.locator("[data-testid='stMain']")


def _no_error(page) -> None:
    errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
    assert errors.count() == 0, errors.first.inner_text()


def test_app_opens_with_six_pages(server, page, ui):
    ui.open_page(page, server)
    nav = page.locator("[data-testid='stSidebarNav']")
    for title in ("Hook basics", "Inspector", "Compare edits", "Grad-CAM", "Runs", "Training"):
        nav.get_by_text(title, exact=True).wait_for(timeout=SLOW_MS)  # exactly one (strict)
    # each page's icon is drawn from Streamlit's Material icon font (no emoji font needed)
    icons = nav.locator("[data-testid='stIconMaterial']")
    assert icons.count() == 6, icons.count()
    assert icons.all_inner_texts() == ["phishing", "search", "compare_arrows",
                                       "local_fire_department", "folder_open", "monitoring"]
    # toolbarMode = "viewer": no Deploy button for the people using the dashboard
    page.locator("[data-testid='stToolbar']").first.wait_for(state="attached", timeout=SLOW_MS)
    assert page.locator("[data-testid='stAppDeployButton']").count() == 0
    _no_error(page)


def test_hook_basics_halving_shows_96(server, page, ui):
    ui.open_page(page, server + "/")  # the default page lives at the root URL
    main = _main(page)
    box = main.locator("[data-testid='stSlider']").filter(has_text="Gradient factor k")
    thumb = box.get_by_role("slider")
    thumb.focus()
    page.keyboard.press("Home")  # k = 0: no gradient gets through
    ui.wait_idle(page)
    main.get_by_text(re.compile(r"x\.grad = 192 · 0 = 0\b")).first.wait_for(timeout=SLOW_MS)
    thumb.focus()
    for _ in range(10):  # step 0.05 -> k = 0.5, the seed's halving
        page.keyboard.press("ArrowRight")
    ui.wait_idle(page)
    main.get_by_text(re.compile(r"x\.grad = 192 · 0\.5 = 96\b")).first.wait_for(timeout=SLOW_MS)
    _no_error(page)


def test_inspector_defaults_show_timeline(server, page, ui):
    ui.open_page(page, server + "/inspector")
    main = _main(page)
    main.get_by_role("button", name="Run", exact=True).click()
    ui.wait_idle(page)
    chart = main.locator(CHART).filter(has_text="Hook firings (timeline)").first
    chart.wait_for(timeout=SLOW_MS)
    assert chart.locator(".scatterlayer .trace").count() >= 1  # markers drawn
    _no_error(page)


def _three_panels(page) -> None:
    main = _main(page)
    chart = main.locator(CHART).filter(has_text="Overlay").first
    chart.wait_for(timeout=SLOW_MS)
    # the seed's titles: the input's class and the class whose map is shown
    for title in (r"^Original: \w+$", r"^Grad-CAM heatmap: \w+$", r"^Overlay$"):
        chart.get_by_text(re.compile(title)).first.wait_for(timeout=SLOW_MS)
    # two go.Image panels and one heatmap, each drawn as an <image> in the SVG
    chart.locator("image").nth(2).wait_for(state="attached", timeout=SLOW_MS)


def test_gradcam_save_find_and_share(server, page, browser, ui):
    ui.open_page(page, server + "/gradcam")
    main = _main(page)
    _three_panels(page)
    _no_error(page)

    main.get_by_role("button", name="Save run").click()
    ui.wait_idle(page)
    saved = main.get_by_text(re.compile(r"Saved as run")).first
    saved.wait_for(timeout=SLOW_MS)
    m = RUN_ID.search(saved.inner_text())
    assert m, saved.inner_text()
    run_id = m.group(0)

    # find it on Runs: search by id narrows the list to it, then open it
    ui.open_page(page, server + "/runs")
    search = _main(page).get_by_role("textbox", name="Search")
    search.fill(run_id)
    search.press("Enter")
    ui.wait_idle(page)
    _main(page).get_by_text(re.compile(r"^1 of \d+ runs$")).wait_for(timeout=SLOW_MS)
    ui.open_page(page, f"{server}/runs?run={run_id}")
    _main(page).get_by_text(f"Run {run_id}", exact=True).wait_for(timeout=SLOW_MS)
    code = _main(page).locator("[data-testid='stCode']").filter(has_text=f"/runs?run={run_id}")
    code.first.wait_for(timeout=SLOW_MS)  # elements arrive one by one: wait for the link
    share = code.first.inner_text().strip()
    assert share.endswith(f"/runs?run={run_id}"), share
    assert share.startswith("http://127.0.0.1:")
    view_link = _main(page).get_by_text(re.compile(r"/gradcam\?run=")).first
    view_link.wait_for(timeout=SLOW_MS)
    view = view_link.inner_text()
    gradcam_link = re.search(r"\S*/gradcam\?run=\S+", view).group(0).strip("`")
    _no_error(page)
    # "open in the page that made it"
    _main(page).get_by_role("link", name="Open in Grad-CAM").click()
    page.wait_for_url(re.compile(rf"/gradcam\?run={run_id}$"), timeout=SLOW_MS)
    _main(page).get_by_text(re.compile(rf"Saved run {run_id}")).first.wait_for(timeout=SLOW_MS)

    # a colleague: fresh context (no session, no cookies) opens the share links
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        other = ctx.new_page()
        ui.open_page(other, share)
        _main(other).get_by_text(f"Run {run_id}", exact=True).wait_for(timeout=SLOW_MS)
        url = gradcam_link if gradcam_link.startswith("http") else server + gradcam_link
        ui.open_page(other, url)
        _main(other).get_by_text(re.compile(rf"Saved run {run_id}")).first.wait_for(timeout=SLOW_MS)
        _three_panels(other)
        _no_error(other)
    except Exception:
        ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
        ARTIFACTS.mkdir(exist_ok=True)
        for i, pg in enumerate(ctx.pages):
            pg.screenshot(path=str(ARTIFACTS / f"colleague-{i}.png"), full_page=True)
        raise
    finally:
        ctx.close()


def test_hook_basics_share_link_opens_the_run(server, page, browser, ui):
    """The link shown after "Save run" on Hook basics (the default page, served at /) opens the
    run: no "Page not found" dialog, the run's banner and its k."""
    ui.open_page(page, server + "/")
    main = _main(page)
    main.get_by_role("button", name="Save run").click()
    ui.wait_idle(page)
    saved = main.get_by_text(re.compile(r"Saved as run")).first
    saved.wait_for(timeout=SLOW_MS)
    run_id = RUN_ID.search(saved.inner_text()).group(0)
    code = main.locator("[data-testid='stCode']").filter(has_text=f"?run={run_id}").first
    code.wait_for(timeout=SLOW_MS)
    link = code.inner_text().strip()
    assert link.startswith("http://127.0.0.1:") and link.endswith(f"/?run={run_id}"), link
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        other = ctx.new_page()
        ui.open_page(other, link)
        _main(other).get_by_text(re.compile(rf"Run {run_id}")).first.wait_for(timeout=SLOW_MS)
        assert other.get_by_text("Page not found").count() == 0
        _main(other).get_by_role("button", name="Back to live view").wait_for(timeout=SLOW_MS)
        _no_error(other)
    finally:
        ctx.close()
