"""ROAD equals pytorch-grad-cam 1.5.7's ROAD metrics on the same maps (same global seed, same
noise order); imputation equals its NoisyLinearImputer; bad input is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooklab.cam import compute
from hooklab.cam import road as R
from hooklab.data.datasets import make_shapes
from hooklab.models import zoo

pgc_road = pytest.importorskip("pytorch_grad_cam.metrics.road")
targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")


@pytest.fixture(scope="module")
def case():
    model = zoo.shipped_model("simple_cnn_shapes")
    x = make_shapes(3, split="test").images
    res = compute(model, x, "gradcam")
    return model, x, res


def test_imputation_equals_the_peers_noisy_linear_imputer(case):
    _, x, res = case
    keep = res.maps < 0.4
    keep[0] = torch.rand(32, 32, generator=torch.Generator().manual_seed(0)) < 0.3
    ours = R.impute(x, keep, noise=0.0)
    peer = pgc_road.NoisyLinearImputer(noise=0.0)
    want = torch.stack([peer(x[i], keep[i].float()) for i in range(3)])
    assert torch.allclose(ours, want, atol=1e-5)
    assert torch.equal(ours[keep[:, None].expand_as(x)], x[keep[:, None].expand_as(x)])


@pytest.mark.parametrize(("peer_cls", "kind", "pct", "score"), [
    ("ROADMostRelevantFirst", "morf", 80, "logit"),
    ("ROADLeastRelevantFirst", "lerf", 20, "softmax"),
])
def test_single_percentile_equals_the_peer(case, peer_cls, kind, pct, score):
    model, x, res = case
    target = (targets_mod.ClassifierOutputTarget if score == "logit"
              else targets_mod.ClassifierOutputSoftmaxTarget)
    tg = [target(int(t)) for t in res.targets]
    torch.manual_seed(3)
    want = getattr(pgc_road, peer_cls)(pct)(x, res.maps.numpy(), tg, model)
    torch.manual_seed(3)
    got = R.road(model, x, res.maps, res.targets, percentiles=[pct], which=[kind],
                 score=score, seed=None)
    np.testing.assert_allclose(getattr(got, kind)[:, 0], want, rtol=1e-4, atol=1e-5)


def test_combined_over_percentiles_equals_the_peer(case):
    model, x, res = case
    tg = [targets_mod.ClassifierOutputTarget(int(t)) for t in res.targets]
    torch.manual_seed(1)
    want = pgc_road.ROADCombined(percentiles=[30, 70])(x, res.maps.numpy(), tg, model)
    torch.manual_seed(1)
    got = R.road(model, x, res.maps, res.targets, percentiles=[30, 70], seed=None)
    np.testing.assert_allclose(got.combined, want, rtol=1e-4, atol=1e-5)
    assert got.morf.shape == got.lerf.shape == (3, 2)
    summary = got.summary()
    assert summary["road_combined"] == pytest.approx(float(want.mean()), abs=1e-4)
    one = R.road(model, x, res.maps, res.targets, percentiles=[50], which=["morf"])
    two = R.road(model, x, res.maps, res.targets, percentiles=[50], which=["morf"])
    assert np.array_equal(one.morf, two.morf)  # private seeded generator: reproducible
    assert R.PERCENTILES == (10, 20, 30, 40, 50, 60, 70, 80, 90)


def test_a_good_map_beats_its_inverse(case):
    model, x, res = case
    good = R.road(model, x, res.maps, res.targets, percentiles=[50, 80])
    bad = R.road(model, x, 1 - res.maps, res.targets, percentiles=[50, 80])
    assert good.combined.mean() > bad.combined.mean()


def test_bad_input_is_one_clear_error(case):
    model, x, res = case
    with pytest.raises(R.RoadError, match=r"a 1x1 map has nothing to rank.*CamResult.maps"):
        R.road(model, x, torch.rand(3, 1, 1), res.targets)
    with pytest.raises(R.RoadError, match=r"differ in number or size"):
        R.road(model, x, res.maps[:, :16, :16], res.targets)
    with pytest.raises(R.RoadError, match="2 targets for 3 maps"):
        R.road(model, x, res.maps, res.targets[:2])
    with pytest.raises(R.RoadError, match="score must be"):
        R.road(model, x, res.maps, res.targets, score="prob")
    with pytest.raises(R.RoadError, match=r"percentiles must lie in \[0, 100\]"):
        R.road(model, x, res.maps, res.targets, percentiles=[150])
