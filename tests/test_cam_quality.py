"""The issue's quality goals on the real trained models (slow: trains up to three SimpleCNNs once
per machine, in the project's git-ignored cache; ``benchmarks/bench_quality.py`` prints the full
figures). Thresholds sit below the measured values (Grad-CAM pointing 0.98 exact, 0.997 within
2 px; HiResCAM 0.94 on the cue, 0.90 on the object) to leave room for float differences between
machines, not for a different result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hooklab import bias, cam, metrics
from hooklab.data import make_biased_shapes, make_shapes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def project_cache():
    """Train into (or read from) the project's cache, shared with the dashboard tests."""
    old = os.environ.get("HOOKLAB_CACHE")
    os.environ["HOOKLAB_CACHE"] = old or str(Path(__file__).resolve().parents[1] / ".hooklab-cache")
    try:
        yield
    finally:
        if old is None:
            del os.environ["HOOKLAB_CACHE"]


def test_gradcam_pointing_game_on_the_default_model():
    from hooklab.train import trained_model

    model = trained_model()
    test = make_shapes(300, split="test")
    res = cam.compute(model, test.images, "gradcam")  # the seed's Grad-CAM at conv3
    assert res.layer == "conv3"
    assert float((res.targets == test.labels).float().mean()) >= 0.95
    assert metrics.pointing_game(res.maps, test.masks) >= 0.93
    assert metrics.pointing_game(res.maps, test.masks, tolerance=2.0) >= 0.97
    random = metrics.random_maps(len(test), (32, 32), seed=0)
    assert metrics.pointing_game(random, test.masks) < 0.2  # the metric can fail


def test_bias_experiment_cam_lands_on_the_cue_then_on_the_shape():
    res = bias.run_bias_experiment(300)  # HiResCAM, the experiment's default
    assert res.method == "hirescam" and res.layer == "conv3"
    biased, rebalanced = res.arms["biased"], res.arms["rebalanced"]
    assert biased.follows_cue >= 0.9 and biased.accuracy_conflict < 0.2  # learned the shortcut
    assert biased.on_cue >= 0.85 and biased.on_object <= 0.1
    assert rebalanced.accuracy >= 0.95 and rebalanced.follows_cue < 0.3
    assert rebalanced.on_object >= 0.85 and rebalanced.on_cue <= 0.05


def test_gradcam_misses_the_small_cue_the_biased_model_uses():
    """Documented behaviour (hooklab.bias): Grad-CAM averages the gradient over the map, so for
    the biased model its maximum is rarely on the marker, though every prediction follows it."""
    model = bias.train_arm("biased")
    test = make_biased_shapes(300, split="test")
    with torch.no_grad():
        preds = model(test.images).argmax(1)
    assert float((preds == test.cue_labels).float().mean()) >= 0.9
    grad = bias.evaluate_arm("biased", model, test, method="gradcam")
    hires = bias.evaluate_arm("biased", model, test, method="hirescam")
    assert grad.on_cue < 0.2 < hires.on_cue
