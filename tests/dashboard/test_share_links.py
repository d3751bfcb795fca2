"""The one page table and the one share link: for every page, the link shown after saving a run
opens that run on that page (through the router, as a browser would)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import pages
from hooklab.cam import runs as cam_runs
from hooklab.models import inputs, zoo
from hooklab.models.zoo import SimpleCNN
from hooklab.studies import compare, inspect
from hooklab.studies.lessons import forward_hook_lesson

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
TIMEOUT = 120


def _trace(page: str):
    """A run as ``page`` saves it (the meta its view reads back)."""
    torch.manual_seed(0)
    if page == "hook_basics":
        return inspect.record_seed_model(forward_hook_lesson().input, 0.75,
                                         meta={"page": page, "model": "simple_model", "k": 0.75})
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    if page == "compare":
        return compare.compare_edits(model, x, [], compare.normalise_config("conv2=scale(0.5)"),
                                     cam_layer=None).to_trace(
            {"page": page, "model": "simple_cnn",
             "settings": {"mode": "single", "config_a_text": "",
                          "config_b_text": "conv2=scale(0.5)",
                          "model": {"name": "simple_cnn", "weights": "random"}}})
    if page == "gradcam":
        info = zoo.model_info("simple_cnn")
        s = inputs.shapes_input(102, info)
        return cam_runs.cam_run_trace(model, s.x, "conv3", 1, meta={
            "page": page, "model": "simple_cnn",
            "cam": {"method": "gradcam", "layer": "conv3", "target": 1, "alpha": 0.4,
                    "input": s.description, "weights": "random",
                    "model_spec": {"name": "simple_cnn", "weights": "random"},
                    "mean": list(info.mean), "std": list(info.std),
                    "class_names": list(info.class_names), "label": s.label}})
    return inspect.run(model, x, ["conv2"], edits="conv2=scale(0.5)",
                       meta={"page": page, "model": "simple_cnn",
                             "settings": {"model": {"name": "simple_cnn", "weights": "random"},
                                          "edits_text": "conv2=scale(0.5)"}})


def _saved_link(trace, page: str) -> tuple[str, str]:
    """Press the shared "Save run" for ``page``; the run id and the link it shows."""
    def script(trace, page):
        from dashboard.components import run_flow

        run_flow.save_run(trace, page)

    at = AppTest.from_function(script, args=(trace, page), default_timeout=TIMEOUT).run()
    at.button(key=f"{page}_save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    rid = at.session_state[f"{page}_saved"]
    (link,) = [c.value for c in at.code]
    return rid, link


def _registered_paths() -> list[str]:
    """Streamlit's own ``st.Page.url_path`` of each page of the table (inside a script run)."""
    def script():
        import streamlit as st

        from dashboard import pages

        st.session_state["paths"] = [p.url_path for p in pages.st_pages()]

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    return list(at.session_state["paths"])


def _open(link: str) -> AppTest:
    """The router on ``link``'s page (the st.Page whose URL path is the link's) and query."""
    url = urlsplit(link)
    path = url.path.strip("/")
    # how st.navigation maps URL paths (Streamlit's own st.Page.url_path) to the table's files
    registered = dict(zip(_registered_paths(), pages.TABLE.values()))
    assert path in registered, f"{link}: no page at /{path} (Page not found)"
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for k, v in parse_qs(url.query).items():
        at.query_params[k] = v[0]
    at.run()
    target = registered[path]
    if path:  # not the default page: go there, as the browser's URL would
        at.switch_page(f"views/{target.file}")
        at.run()
    return at


@pytest.mark.parametrize("page", list(pages.TABLE))
def test_link_shown_after_saving_opens_the_run_on_its_page(page, store_dir):
    rid, link = _saved_link(_trace(page), page)
    assert parse_qs(urlsplit(link).query) == {"run": [rid]}
    at = _open(link)
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == pages.TABLE[page].title_en  # the page that link names
    shown = "\n".join([i.value for i in at.info] + [s.value for s in at.subheader])
    assert rid in shown  # ... showing that run
    if page == "compare":  # an A/B run names both configurations, in the one edit text
        assert "A: no edit · B: conv2=scale(0.5)" in shown, shown
    if page == "inspector":
        assert "conv2=scale(0.5)" in shown, shown


def test_default_page_is_served_at_the_root():
    first = pages.PAGES[0]
    assert pages.TABLE[first[4]].url_path == "" and first[4] == "hook_basics"
    assert pages.share_link("X", "hook_basics") == "/?run=X"
    assert pages.share_link("X", "gradcam") == "/gradcam?run=X"
    assert _registered_paths() == ["", "inspector", "compare", "gradcam", "runs", "training"]
