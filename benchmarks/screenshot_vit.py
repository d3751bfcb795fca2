"""Screenshot of the Grad-CAM page on the SimpleViT (its shipped weights, shapes sample 102):
``docs/img/vit_cam.png`` for the README.

Starts ``streamlit run dashboard/app.py`` on a free localhost port with a temporary run store,
opens ``/gradcam`` in Debian's Chromium (Playwright), picks ``simple_vit`` (and, when given, a
method and a layer of the form, then runs it) and waits for the three panels, then saves the
visible page, scrolled to the overlay.

Usage: ``python benchmarks/screenshot_vit.py [--out docs/img/vit_cam.png] [--method TITLE]
[--layer NAME]`` (the README's: ``--method "Grad-CAM element-wise" --layer
encoder.layers.encoder_layer_1.ln_1``, the method and block ``bench_quality.py --only-vit``
chooses on train images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _browser import ROOT, chromium_missing, harness, served_dashboard

TIMEOUT_MS = 600_000


def _pick(page, main, label: str, option: str) -> None:
    main.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.keyboard.type(option)  # long option lists are virtualised: filter them first
    page.get_by_role("option", name=option, exact=True).click()


def shoot(browser, url: str, out: Path, method: str | None = None,
          layer: str | None = None) -> Path:
    """Pick simple_vit on the Grad-CAM page (and the method and layer when given, then run the
    form), wait for the overlay, save a screenshot."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    main = page.locator("[data-testid='stMain']")
    harness.open_page(page, url + "/gradcam", timeout=TIMEOUT_MS)
    _pick(page, main, "Model", "simple_vit")
    harness.wait_idle(page, timeout=TIMEOUT_MS)
    if method or layer:
        if method:
            _pick(page, main, "Method", method)
        if layer:
            _pick(page, main, "Target layer", layer)
        main.get_by_role("button", name="Run Grad-CAM").click()
        harness.wait_idle(page, timeout=TIMEOUT_MS)
    overlay = main.locator("[data-testid='stPlotlyChart']:has-text('Overlay')").first
    overlay.wait_for(timeout=TIMEOUT_MS)
    overlay.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(1500)  # let Plotly finish drawing
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    ctx.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "vit_cam.png")
    ap.add_argument("--method", help="the method's title in the form (default: the page's)")
    ap.add_argument("--layer", help="target layer (default: automatic)")
    args = ap.parse_args()
    if chromium_missing():
        return 2
    with served_dashboard() as (browser, url):
        path = shoot(browser, url, args.out, args.method, args.layer)
    print(f"screenshot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
