"""hooklab.cam.sweep: candidate layers, the scores recomputed independently, the ranking rule,
the recommended layer on the shipped SimpleCNN, bad input, no hook left behind."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from hooklab.cam import engine, metrics
from hooklab.cam import sweep as S
from hooklab.cam.engine import CamError
from hooklab.cam.methods import minmax
from hooklab.core.errors import NonSpatialLayerError
from hooklab.data import datasets as D
from hooklab.models import zoo
from hooklab.studies.train import trained_model


@pytest.fixture(scope="module")
def shipped():
    return trained_model()  # the shipped default weights (sha256-checked), not a local training


@pytest.fixture(scope="module")
def shapes():
    return D.make_shapes(8, 0, "test")


def test_candidates_one_layer_per_resolution():
    assert S.candidate_layers(zoo.SimpleCNN(5), (3, 32, 32)) == ["conv1", "conv2", "conv3"]
    resnet = torchvision.models.resnet18(num_classes=3)
    assert S.candidate_layers(resnet, (3, 64, 64)) == ["bn1", "layer1", "layer2", "layer3",
                                                        "layer4"]
    # VGG-like: the last convolution at each resolution, then the block (after its last pool)
    vgg = nn.Sequential()
    vgg.add_module("features", nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)))
    vgg.add_module("head", nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 3)))
    assert S.candidate_layers(vgg, torch.zeros(2, 3, 16, 16)) == [
        "features.2", "features.5", "features"]


def test_a_vits_blocks_are_candidates():
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=16, mlp_dim=32,
                                               num_classes=3)
    cands = S.candidate_layers(vit, (3, 32, 32))
    assert cands[0] == "conv_proj"  # the patch embedding is a spatial layer
    assert cands[1:3] == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    assert zoo.auto_target_layer(vit, (3, 32, 32)) in cands


def test_registered_cam_layer_is_always_a_candidate():
    model = zoo.SimpleCNN(3)
    zoo.attach(model, hooklab_info=type("I", (), {"cam_layer": "pool"})())
    assert S.candidate_layers(model, (3, 32, 32))[-1] == "pool"


def test_scores_equal_metrics_on_the_engines_maps(shipped, shapes, no_leak):
    x, masks = shapes.images[:3], shapes.masks[:3]
    with no_leak(shipped):
        res = S.sweep(shipped, x, masks=masks, methods=["gradcam", "eigencam"],
                      layers=["conv2", "conv3"], steps=4)
    assert set(zip(res.table["layer"], res.table["method"], strict=True)) == {
        (lay, m) for lay in ("conv2", "conv3") for m in ("gradcam", "eigencam")}
    preds = shipped(x).argmax(1)
    assert res.targets.tolist() == preds.tolist()
    for _, row in res.table.iterrows():
        maps = engine.compute(shipped, x, row["method"], layer=row["layer"], target=preds).maps
        assert torch.allclose(res.maps[(row["layer"], row["method"])], maps)
        want = metrics.evaluate(shipped, x, maps, preds, masks, random_baseline=False,
                                steps=4)["cam"]
        for col in ("deletion_auc", "insertion_auc", "average_drop", "pointing"):
            assert row[col] == pytest.approx(want[col], abs=1e-6), col
        assert row["score"] == pytest.approx(want["insertion_auc"] - want["deletion_auc"])
    # the table is sorted best pair first
    assert list(res.table["score"]) == sorted(res.table["score"], reverse=True)


def test_gradcam_map_of_a_sweep_matches_autograd(shipped, shapes):
    """The map the sweep scores is Grad-CAM of torch.autograd.grad at the layer."""
    x = shapes.images[:2]
    res = S.sweep(shipped, x, methods=["gradcam"], layers=["conv2"], steps=2)
    acts = {}
    handle = shipped.conv2.register_forward_hook(lambda _m, _i, out: acts.setdefault("a", out))
    try:
        logits = shipped(x)
    finally:
        handle.remove()
    t = res.targets
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), [acts["a"]])
    raw = torch.relu((g.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1)).detach()
    want = minmax(engine.resize(raw, (32, 32)))
    assert torch.allclose(res.maps[("conv2", "gradcam")], want, atol=1e-5)


def test_ranking_rule_mean_score_then_lower_average_drop():
    table = pd.DataFrame([
        {"layer": "a", "method": "m1", "score": 0.50, "insertion_auc": 0.7, "deletion_auc": 0.2,
         "average_drop": 30.0, "increase_confidence": 0.0},
        {"layer": "a", "method": "m2", "score": 0.30, "insertion_auc": 0.5, "deletion_auc": 0.2,
         "average_drop": 30.0, "increase_confidence": 0.0},
        {"layer": "b", "method": "m1", "score": 0.40, "insertion_auc": 0.6, "deletion_auc": 0.2,
         "average_drop": 10.0, "increase_confidence": 0.0},
        {"layer": "b", "method": "m2", "score": 0.40, "insertion_auc": 0.6, "deletion_auc": 0.2,
         "average_drop": 10.0, "increase_confidence": 0.0},
        {"layer": "c", "method": "m1", "score": 0.10, "insertion_auc": 0.3, "deletion_auc": 0.2,
         "average_drop": 1.0, "increase_confidence": 0.0},
        {"layer": "c", "method": "m2", "score": 0.20, "insertion_auc": 0.4, "deletion_auc": 0.2,
         "average_drop": 1.0, "increase_confidence": 0.0},
    ])
    ranked = S._rank_layers(table, {"a": "8×8", "b": "4×4", "c": "2×2"})
    # a and b tie on the mean score (0.40); b has the lower Average Drop; c is last
    assert list(ranked["layer"]) == ["b", "a", "c"]
    assert list(ranked["rank"]) == [1, 2, 3]
    assert ranked.loc[ranked["layer"] == "a", "best_method"].item() == "m1"
    reason = S._reason(ranked, {"score": 0.05}, 2)
    assert reason.startswith("b ranks first") and "tied with a" in reason


def test_shipped_simplecnn_recommends_conv3(shipped, shapes):
    res = S.sweep(shipped, shapes.images[:6], masks=shapes.masks[:6],
                  methods=["gradcam", "hirescam"], steps=8)
    assert list(res.layers["layer"].sort_values()) == ["conv1", "conv2", "conv3"]
    assert res.recommended == "conv3" == res.layers.iloc[0]["layer"]
    top = res.layers.iloc[0]
    assert top["score"] > res.random["score"] + 0.2  # wide margin over the random map
    assert res.reason.startswith("conv3 ranks first")
    assert S.auto_target_layer(shipped, shapes.images[:4], by="faithfulness",
                               methods=["gradcam"], layers=["conv1", "conv3"], steps=4) == "conv3"
    assert S.auto_target_layer(shipped, (3, 32, 32), by="structure") == "conv3"


def test_model_without_spatial_layer_names_what_would_work(no_leak):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with no_leak(mlp), pytest.raises(NonSpatialLayerError, match="simple_cnn or resnet18"):
        S.sweep(mlp, torch.rand(2, 3, 2, 2))
    with pytest.raises(NonSpatialLayerError, match="layers=\\[...\\]"):
        S.auto_target_layer(mlp, torch.rand(2, 3, 2, 2), by="faithfulness")


def test_bad_input_is_one_clear_error_and_no_hook_is_left(shipped, shapes, no_leak):
    x = shapes.images[:2]
    with no_leak(shipped):
        with pytest.raises(CamError, match="masks"):
            S.sweep(shipped, x, masks=torch.zeros(3, 32, 32, dtype=torch.bool))
        with pytest.raises(CamError, match="unknown CAM method 'nope'"):
            S.sweep(shipped, x, methods=["gradcam", "nope"])
        with pytest.raises(CamError, match="top-k"):
            S.sweep(shipped, x, methods=["gradcam"], layers=["conv3"], target="topk:2")
        with pytest.raises(CamError, match="images"):
            S.sweep(shipped, "not a tensor")
        with pytest.raises(NonSpatialLayerError):  # raised inside the hook of the second layer
            S.sweep(shipped, x, methods=["gradcam"], layers=["conv3", "fc1"], steps=2)
    with pytest.raises(CamError, match="'structure' or 'faithfulness'"):
        S.auto_target_layer(shipped, x, by="luck")
    with pytest.raises(CamError, match="not a shape"):
        S.auto_target_layer(shipped, (3, 32, 32), by="faithfulness")


def test_default_methods_follow_the_registry():
    names = S.default_methods()
    assert names and all(not engine.METHODS[n].needs_model for n in names)
    assert set(names) | {n for n, m in engine.METHODS.items() if m.needs_model} == set(
        engine.METHODS)
