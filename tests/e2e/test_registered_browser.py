"""In a real Chromium: a server started with ``HOOKLAB_MODELS`` naming the example lab's module
(and one module that does not exist) offers the registered model in the picker with its
description; the Inspector and Grad-CAM run on it; the missing module is one error message."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ARTIFACTS, start_server, stop_server
from tests.models.registry_helpers import LAB, LAB_MODULE

pytestmark = pytest.mark.e2e
#: Playwright's waiting assertions (the module is skipped where Playwright is not installed).
expect = pytest.importorskip("playwright.sync_api").expect

CHART = "[data-testid='stPlotlyChart']"
ERRORS = "[data-testid='stException'], [data-testid='stAlertContentError']"
SLOW_MS = 90_000
MISSING = "no_such_lab_xyz.models"


@pytest.fixture(scope="module")
def lab_server(chromium_path, tmp_path_factory) -> Iterator[str]:
    """``HOOKLAB_MODELS=hooklab_example_lab.models,no_such_lab_xyz.models streamlit run ...``
    with the example package on PYTHONPATH (not installed)."""
    base = tmp_path_factory.mktemp("e2e-lab")
    ARTIFACTS.mkdir(exist_ok=True)
    path = os.pathsep.join(p for p in (str(LAB), os.environ.get("PYTHONPATH", "")) if p)
    proc, url = start_server(base / "store", log_path=ARTIFACTS / "e2e-lab-server.log",
                             extra_env={"HOOKLAB_MODELS": f"{LAB_MODULE},{MISSING}",
                                        "PYTHONPATH": path})
    try:
        yield url
    finally:
        stop_server(proc)


def _main(page):
    return page.locator("[data-testid='stMain']")


def _only_the_module_error(page) -> None:
    errors = page.locator(ERRORS)
    texts = errors.all_inner_texts()
    assert len(texts) == 1, texts
    assert f"could not load model module '{MISSING}'" in texts[0]
    assert "built-in models still work" in texts[0]


def _pick_lab(page, ui) -> None:
    main = _main(page)
    box = main.locator("[data-testid='stSelectbox']").filter(has_text="Model").first
    box.click()
    option = page.get_by_role("option", name=re.compile(r"lab_resnet — example lab: residual"))
    option.wait_for(timeout=SLOW_MS)
    assert page.get_by_role("option", name="simple_cnn", exact=True).count() == 1  # the zoo
    option.click()
    ui.wait_idle(page)
    expect(box.locator("input").first).to_have_value(re.compile(r"^lab_resnet — example lab"),
                                                     timeout=SLOW_MS)
    main.get_by_text("Default: its registered weights file lab_resnet.safetensors."
                     ).first.wait_for(timeout=SLOW_MS)
    weights = main.locator("[data-testid='stRadio']").filter(has_text="Weights").first
    assert weights.get_by_role("radio").first.is_checked()  # "default": the registered file


def test_inspector_offers_and_records_the_registered_model(lab_server, page, ui):
    ui.open_page(page, lab_server + "/inspector")
    _only_the_module_error(page)
    _pick_lab(page, ui)
    main = _main(page)
    main.get_by_role("button", name="Run", exact=True).click()
    ui.wait_idle(page)
    chart = main.locator(CHART).filter(has_text="Hook firings (timeline)").first
    chart.wait_for(timeout=SLOW_MS)
    assert chart.locator(".scatterlayer .trace").count() >= 1
    main.get_by_text("cross", exact=True).first.wait_for(timeout=SLOW_MS)  # the prediction
    _only_the_module_error(page)


def test_gradcam_uses_the_registered_cam_layer(lab_server, page, ui):
    ui.open_page(page, lab_server + "/gradcam")
    _pick_lab(page, ui)
    main = _main(page)
    layer = main.locator("[data-testid='stSelectbox']").filter(has_text="Target layer").first
    expect(layer.locator("input").first).to_have_value("automatic (block2)", timeout=SLOW_MS)
    main.locator(CHART).filter(has_text="Overlay").first.wait_for(timeout=SLOW_MS)
    _only_the_module_error(page)


def test_compare_suggests_an_edit_on_the_registered_models_layers(lab_server, page, ui):
    ui.open_page(page, lab_server + "/compare")
    main = _main(page)
    b = main.get_by_role("textbox", name="Configuration B")
    expect(b).to_have_value("conv2=scale(0.5)", timeout=SLOW_MS)  # the seed's SimpleCNN first
    _pick_lab(page, ui)
    expect(b).to_have_value("block1.conv2=scale(0.5)", timeout=SLOW_MS)  # shown, not only kept
    main.get_by_role("button", name="Run A and B").click()
    ui.wait_idle(page)
    main.locator(CHART).filter(has_text="Gradient-norm ratio").first.wait_for(timeout=SLOW_MS)
    _only_the_module_error(page)
