"""Dashboard latency in a real browser: press "run", wait until the chart is drawn.

Starts ``streamlit run dashboard/app.py`` on a free localhost port (store in a temporary folder),
drives Debian's Chromium with Playwright and measures, for the default model (the SimpleCNN
trained on shapes) on its default input, the time from the click to the chart being drawn:

* Inspector: press "Run", until the hook-firing timeline is (re)drawn;
* Grad-CAM: press "Run Grad-CAM", until the three panels are (re)drawn.

Each repetition changes the sample index first (so the chart really changes and is redrawn),
then times the click alone. "Drawn" means Plotly's ``plotly_afterplot`` event fired on the chart
(or a new chart element replaced it) and the app reports ``notRunning``. The first run of each
page (model loading, and training on a cold cache) is a warm-up and is not timed. The goal on a
2-core machine is a median of at most 2 s.

Usage::

    python benchmarks/bench_dashboard.py [--reps 7] [--screenshots docs/screenshots]

``--screenshots DIR`` also saves a screenshot of the first five pages (after a Grad-CAM run
is saved, so the Runs page has something to show); the Training page is not among them (on
an empty store it offers a demo training that takes minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from _browser import ROOT, chromium_missing, harness, served_dashboard  # noqa: E402
from _machine import machine_line  # noqa: E402  (benchmarks/_machine.py)

MARK_JS = """(title) => {
  window.__benchRan = false; window.__benchIdle = null; window.__benchDrawn = null;
  const app = document.querySelector("[data-testid='stApp']");
  if (window.__benchObs) window.__benchObs.disconnect();
  window.__benchObs = new MutationObserver(() => {
    const s = app.getAttribute('data-test-script-state');
    if (s === 'running') { window.__benchRan = true; return; }
    if (s === 'notRunning' && window.__benchRan && window.__benchIdle === null) {
      window.__benchIdle = -1;  // two frames later the browser has painted the new elements
      requestAnimationFrame(() => requestAnimationFrame(() => {
        window.__benchIdle = performance.now(); }));
    }
  });
  window.__benchObs.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  for (const box of document.querySelectorAll("[data-testid='stPlotlyChart']")) {
    if (!box.textContent.includes(title)) continue;
    for (const el of box.querySelectorAll('.js-plotly-plot')) {
      if (el.on) el.on('plotly_afterplot', () => { window.__benchDrawn = performance.now(); });
    }
  }
  return performance.now();
}"""

DRAWN_JS = """(title) => {
  if (window.__benchIdle === null || window.__benchIdle < 0) return false;
  for (const box of document.querySelectorAll("[data-testid='stPlotlyChart']")) {
    if (box.textContent.includes(title) && box.querySelector('.main-svg')) {
      return Math.max(window.__benchIdle, window.__benchDrawn || 0);
    }
  }
  return false;
}"""


def timed_click(page, button, chart_title: str, timeout_ms: int = 120_000) -> float:
    """Seconds from clicking ``button`` until the rerun it started has finished and the chart
    titled ``chart_title`` is on screen (two animation frames after the app reports
    ``notRunning``, or after Plotly's last ``plotly_afterplot`` if that comes later)."""
    start = page.evaluate(MARK_JS, chart_title)
    button.click()
    handle = page.wait_for_function(DRAWN_JS, arg=chart_title, polling="raf", timeout=timeout_ms)
    return (float(handle.json_value()) - float(start)) / 1000.0


def set_number(page, label: str, value: int, submit: bool) -> None:
    box = page.locator("[data-testid='stMain']").get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter" if submit else "Tab")
    if submit:
        harness.wait_idle(page)


def bench_inspector(page, url: str, reps: int) -> list[float]:
    harness.open_page(page, url + "/inspector")
    main = page.locator("[data-testid='stMain']")
    run = main.get_by_role("button", name="Run", exact=True)
    run.click()  # warm-up: model load (and training on a cold cache)
    harness.wait_idle(page, timeout=600_000)
    main.locator(harness_chart("Hook firings (timeline)")).first.wait_for(timeout=600_000)
    times = []
    for i in range(reps):
        set_number(page, "Sample index", 100 + i, submit=True)
        times.append(timed_click(page, run, "Hook firings (timeline)"))
    return times


def bench_gradcam(page, url: str, reps: int) -> list[float]:
    harness.open_page(page, url + "/gradcam", timeout=600_000)
    main = page.locator("[data-testid='stMain']")
    main.locator(harness_chart("Overlay")).first.wait_for(timeout=600_000)
    run = main.get_by_role("button", name="Run Grad-CAM")
    times = []
    for i in range(reps):
        set_number(page, "Sample index / random seed", 100 + i, submit=False)  # inside the form
        times.append(timed_click(page, run, "Overlay"))
    return times


def harness_chart(title: str) -> str:
    return f"[data-testid='stPlotlyChart']:has-text('{title}')"


def screenshots(browser, url: str, out: Path) -> list[Path]:
    """A screenshot of each page as a new user sees it after one action, scrolled to the
    page's main result."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = ctx.new_page()
    main = page.locator("[data-testid='stMain']")
    shots = []

    def snap(name: str, focus: str | None = None) -> None:
        if focus:
            main.locator(focus).first.evaluate("e => e.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(1000)  # let Plotly finish drawing
        path = out / f"{name}.png"
        page.screenshot(path=str(path))
        shots.append(path)

    harness.open_page(page, url + "/")
    snap("1-hook-basics")
    harness.open_page(page, url + "/inspector")
    main.get_by_role("button", name="Run", exact=True).click()
    harness.wait_idle(page, timeout=600_000)
    snap("2-inspector", harness_chart("Hook firings (timeline)"))
    harness.open_page(page, url + "/compare")
    main.get_by_role("button", name="Run A and B").click()
    harness.wait_idle(page, timeout=600_000)
    snap("3-compare-edits", "[data-testid='stPlotlyChart']")
    harness.open_page(page, url + "/gradcam", timeout=600_000)
    main.locator(harness_chart("Overlay")).first.wait_for(timeout=600_000)
    snap("4-gradcam", harness_chart("Overlay"))
    main.get_by_role("button", name="Save run").click()
    harness.wait_idle(page)
    saved = main.get_by_text("Saved as run").first
    saved.wait_for(timeout=60_000)
    run_id = saved.inner_text().split()[-1]
    harness.open_page(page, f"{url}/runs?run={run_id}")
    snap("5-runs", "[data-testid='stHeading']:has-text('Run ')")
    ctx.close()
    return shots


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per page")
    ap.add_argument("--screenshots", type=Path, default=None,
                    help="also save a screenshot of each page into this folder")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    if chromium_missing():
        return 2
    with served_dashboard() as (browser, url):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        t0 = time.perf_counter()
        results = {"Inspector (Run -> timeline)": bench_inspector(page, url, args.reps),
                   "Grad-CAM (Run Grad-CAM -> 3 panels)": bench_gradcam(page, url, args.reps)}
        shots = screenshots(browser, url, args.screenshots) if args.screenshots else []
    print(f"cpu cores: {os.cpu_count()}   repetitions: {args.reps}   goal: median <= 2.00 s\n")
    print(f"{'page':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}  goal")
    for name, ts in results.items():
        med = statistics.median(ts)
        print(f"{name:40s} {med:9.3f} {min(ts):7.3f} {max(ts):7.3f}  "
              f"{'ok' if med <= 2.0 else 'MISSED'}")
    print(f"\n(total wall time {time.perf_counter() - t0:.0f} s)")
    for s in shots:
        print(f"screenshot: {s.relative_to(ROOT) if s.is_relative_to(ROOT) else s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
