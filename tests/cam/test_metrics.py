"""hooklab.cam.metrics against hand computations with plain PyTorch / NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hooklab.cam import metrics
from hooklab.cam.metrics import MetricError


class PatchModel(nn.Module):
    """Class 0's logit = 4 (mean of channel 0 in the central 4x4 patch - 1); class 1's = 0."""

    def forward(self, x):
        s = (x[:, 0, 2:6, 2:6].mean(dim=(1, 2)) - 1) * 4
        return torch.stack([s, torch.zeros_like(s)], dim=1)


@pytest.fixture
def toy():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8) + 0.5
    return PatchModel(), x


def test_average_drop_and_increase_match_definition(toy):
    model, x = toy
    torch.manual_seed(1)
    maps = torch.rand(3, 8, 8)
    t = torch.tensor([0, 1, 0])
    ad, ic = metrics.average_drop_increase(model, x, maps, t)
    y = torch.softmax(model(x), 1)[torch.arange(3), t].numpy()
    o = torch.softmax(model(x * maps[:, None]), 1)[torch.arange(3), t].numpy()
    exp_ad = 100 * np.mean([max(0.0, a - b) / a for a, b in zip(y, o)])
    exp_ic = 100 * np.mean([a < b for a, b in zip(y, o)])
    assert ad == pytest.approx(exp_ad, rel=1e-5)
    assert ic == pytest.approx(exp_ic)
    # the whole image kept: no drop, no increase
    assert metrics.average_drop_increase(model, x, torch.ones(3, 8, 8), t) == (0.0, 0.0)


def test_deletion_insertion_match_hand_loop(toy):
    model, x = toy
    torch.manual_seed(2)
    maps = torch.rand(3, 8, 8)  # distinct values: no ties
    t = torch.tensor([0, 0, 1])
    steps = 8
    di = metrics.deletion_insertion(model, x, maps, t, steps=steps, batch_size=5)
    base_ins = metrics.blur(x)
    for i in range(3):
        order = np.argsort(-maps[i].reshape(-1).numpy(), kind="stable")
        dele, ins = [], []
        for s in range(steps + 1):
            k = round(s * 64 / steps)
            keep = np.zeros(64, bool)
            keep[order[:k]] = True
            m = torch.from_numpy(keep.reshape(8, 8))
            xd = torch.where(m, torch.zeros_like(x[i]), x[i])
            xi = torch.where(m, x[i], base_ins[i])
            dele.append(float(torch.softmax(model(xd[None]), 1)[0, t[i]]))
            ins.append(float(torch.softmax(model(xi[None]), 1)[0, t[i]]))
        np.testing.assert_allclose(di.deletion[i], dele, rtol=1e-5)
        np.testing.assert_allclose(di.insertion[i], ins, rtol=1e-5)
    fr = np.linspace(0, 1, steps + 1)
    np.testing.assert_allclose(di.fractions, fr)
    trapz = getattr(np, "trapezoid", None) or np.trapz
    assert di.deletion_auc == pytest.approx(np.mean([trapz(c, fr) for c in di.deletion]))
    assert di.insertion_auc == pytest.approx(np.mean([trapz(c, fr) for c in di.insertion]))


def test_a_faithful_map_beats_the_random_baseline(toy):
    model, _ = toy
    x = torch.zeros(3, 3, 8, 8)
    x[:, :, 2:6, 2:6] = 2.0
    good = torch.zeros(3, 8, 8)
    good[:, 2:6, 2:6] = 1.0  # exactly the pixels the model uses
    t = torch.zeros(3, dtype=torch.long)
    table = metrics.evaluate(model, x, good, t, masks=good.bool(), steps=16)
    cam, rnd = table["cam"], table["random"]
    assert cam["deletion_auc"] < rnd["deletion_auc"]
    assert cam["insertion_auc"] > rnd["insertion_auc"]
    assert cam["pointing"] == 1.0
    assert cam["average_drop"] == 0.0  # the map keeps the whole patch


def test_pointing_game_hits_ties_and_tolerance():
    maps = torch.zeros(3, 6, 6)
    maps[0, 1, 1] = 1.0  # inside
    maps[1, 5, 5] = 1.0  # outside, 2 px diagonal from the mask corner (3, 3)... (distance 2.83)
    # maps[2] all zero: every pixel ties, the hit is the mask's area fraction
    masks = torch.zeros(3, 6, 6, dtype=torch.bool)
    masks[:, :4, :4] = True
    hits = metrics.max_in_mask(maps, masks)
    torch.testing.assert_close(hits, torch.tensor([1.0, 0.0, 16 / 36]))
    assert metrics.pointing_game(maps, masks) == pytest.approx((1 + 0 + 16 / 36) / 3)
    assert metrics.max_in_mask(maps, masks, tolerance=2)[1] == 0.0  # 2.83 > 2
    assert metrics.max_in_mask(maps, masks, tolerance=3)[1] == 1.0
    with pytest.raises(MetricError):
        metrics.max_in_mask(maps, masks[:2])


def test_random_maps_are_seeded_and_normalised():
    a = metrics.random_maps(4, (32, 32), seed=3)
    b = metrics.random_maps(4, (32, 32), seed=3)
    c = metrics.random_maps(4, (32, 32), seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 32, 32)
    assert torch.allclose(a.amin(dim=(1, 2)), torch.zeros(4))
    assert torch.allclose(a.amax(dim=(1, 2)), torch.ones(4))


def test_ranks_break_ties_into_a_permutation():
    maps = torch.zeros(2, 4, 4)
    maps[0, 2, 2] = 1
    r = metrics._ranks(maps, seed=0)
    for i in range(2):
        assert sorted(r[i].reshape(-1).tolist()) == list(range(16))
    assert r[0, 2, 2] == 0


def test_shape_errors(toy):
    model, x = toy
    with pytest.raises(MetricError, match="differ"):
        metrics.average_drop_increase(model, x, torch.rand(3, 4, 4), [0, 0, 0])
    with pytest.raises(MetricError, match="targets"):
        metrics.deletion_insertion(model, x, torch.rand(3, 8, 8), [0, 0])
    with pytest.raises(MetricError, match="baseline"):
        metrics.deletion_insertion(model, x, torch.rand(3, 8, 8), 0, deletion_baseline="x")


def test_compare_methods_table_on_simplecnn(no_leak):
    from hooklab.models.zoo import SimpleCNN

    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(3, 3, 32, 32)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    with no_leak(model):
        table = metrics.compare_methods(model, x, masks, methods=["gradcam", "eigencam"],
                                        steps=4, target="topk:2")
    assert list(table["method"]) == ["gradcam", "eigencam", "random"]
    # every row equals the metrics computed here, on the same maps: pointing and AD/IC in plain
    # PyTorch, the deletion/insertion AUCs by the metric's own function
    from hooklab.cam import engine as cam

    results = [cam.compute(model, x, m, target="topk:2") for m in ("gradcam", "eigencam")]
    sample, targets = results[0].sample, results[0].targets
    assert len(sample) == 6  # top-2 classes of 3 images
    all_maps = [r.maps for r in results] + [metrics.random_maps(6, (32, 32), seed=0)]
    xs, ms = x[sample], masks[sample]
    with torch.no_grad():
        y = torch.softmax(model(xs), 1).gather(1, targets[:, None])[:, 0]
    for (_, row), maps in zip(table.iterrows(), all_maps, strict=True):
        top = maps == maps.amax(dim=(-2, -1), keepdim=True)
        pointing = ((top & ms).sum((-2, -1)).float() / top.sum((-2, -1)).float()).mean()
        with torch.no_grad():
            o = torch.softmax(model(xs * maps[:, None]), 1).gather(1, targets[:, None])[:, 0]
        drop = 100 * (torch.clamp(y - o, min=0) / y).mean()
        increase = 100 * (y < o).float().mean()
        di = metrics.deletion_insertion(model, xs, maps, targets, steps=4)
        assert row["pointing"] == pytest.approx(float(pointing), abs=1e-6), row["method"]
        assert row["average_drop"] == pytest.approx(float(drop), rel=1e-4, abs=1e-4)
        assert row["increase_confidence"] == pytest.approx(float(increase), abs=1e-6)
        assert row["deletion_auc"] == pytest.approx(di.deletion_auc, rel=1e-5)
        assert row["insertion_auc"] == pytest.approx(di.insertion_auc, rel=1e-5)
    assert table["average_drop"].nunique() == 3  # the rows really are three different maps


def test_evaluate_several_tolerances(toy):
    model, x = toy
    maps = torch.zeros(3, 8, 8)
    maps[:, 0, 0] = 1.0
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, 2:, 2:] = True  # (0, 0) is 2.83 px from (2, 2)
    row = metrics.evaluate(model, x, maps, 0, masks, tolerance=[0, 3], steps=2,
                           random_baseline=False)["cam"]
    assert row["pointing"] == 0.0 and row["pointing@3px"] == 1.0


def test_evaluate_with_curves_gives_each_rows_own_curves(toy):
    """The curves beside the rows are the deletion/insertion of that very map (CAM or random)."""
    model, x = toy
    torch.manual_seed(2)
    maps = torch.rand(3, 8, 8)
    rows, curves = metrics.evaluate_with_curves(model, x, maps, 0, steps=4)
    assert rows == metrics.evaluate(model, x, maps, 0, steps=4)
    assert set(curves) == {"cam", "random"}
    for name, m in (("cam", maps), ("random", metrics.random_maps(3, (8, 8), seed=0))):
        di = metrics.deletion_insertion(model, x, m, 0, steps=4)
        torch.testing.assert_close(torch.as_tensor(curves[name].deletion),
                                   torch.as_tensor(di.deletion))
        torch.testing.assert_close(torch.as_tensor(curves[name].insertion),
                                   torch.as_tensor(di.insertion))
        assert rows[name]["deletion_auc"] == curves[name].deletion_auc


def test_curve_auc_is_the_trapezoidal_area_per_curve():
    rng = np.random.default_rng(0)
    fr = np.sort(np.r_[0.0, rng.random(9), 1.0])
    ys = rng.random((4, fr.size))
    got = metrics.curve_auc(fr, ys)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, [np.trapezoid(y, fr) for y in ys], rtol=1e-12)
    assert float(metrics.curve_auc(fr, np.ones(fr.size))) == pytest.approx(1.0)
