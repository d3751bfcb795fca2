"""hooklab.studies.bias: where CAM maxima land (cue / object / elsewhere), checked on models built to
look at a known region, plus the plumbing of the two-arm experiment."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.data.datasets import ShapesData
from hooklab.studies import bias


class RegionModel(nn.Module):
    """Logits from the conv features pooled over a fixed region only: its CAM must lie there."""

    def __init__(self, region: torch.Tensor, classes: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, classes)
        with torch.no_grad():
            self.conv.weight.mul_(0.1)
            self.conv.bias.fill_(1.0)  # positive activations
            self.fc.weight.abs_()  # positive weights: the region raises every score
        self.register_buffer("region", region.float())

    def forward(self, x):
        a = F.relu(self.conv(x))
        return self.fc((a * self.region).sum((2, 3)) / self.region.sum())


def fake_split(n: int = 8) -> ShapesData:
    torch.manual_seed(1)
    obj = torch.zeros(n, 32, 32, dtype=torch.bool)
    obj[:, 12:20, 12:20] = True
    cue = torch.zeros(n, 32, 32, dtype=torch.bool)
    cue[:, :4, :4] = True
    labels = torch.randint(0, 6, (n,))
    cue_labels = torch.randint(0, 6, (n,))
    return ShapesData(torch.randn(n, 3, 32, 32), labels, obj, cue, cue_labels, split="test")


@pytest.mark.parametrize("looks_at", ["cue", "object"])
def test_cam_maxima_land_where_the_model_looks(looks_at, no_leak):
    test = fake_split()
    region = (test.cue_masks if looks_at == "cue" else test.masks)[0]
    model = RegionModel(region)
    with no_leak(model):
        arm = bias.evaluate_arm(looks_at, model, test, method="hirescam", layer="conv")
    assert arm.on_cue == (1.0 if looks_at == "cue" else 0.0)
    assert arm.on_object == (0.0 if looks_at == "cue" else 1.0)
    assert arm.elsewhere == 0.0
    preds = model(test.images).argmax(1)
    assert arm.accuracy == pytest.approx(float((preds == test.labels).float().mean()))
    assert arm.follows_cue == pytest.approx(float((preds == test.cue_labels).float().mean()))
    conflict = test.cue_labels != test.labels
    assert arm.accuracy_conflict == pytest.approx(
        float((preds[conflict] == test.labels[conflict]).float().mean()))


def test_location_fractions_sum_to_one():
    maps = torch.zeros(4, 8, 8)
    maps[0, 0, 0] = 1  # cue
    maps[1, 4, 4] = 1  # object
    maps[2, 7, 0] = 1  # elsewhere
    # maps[3]: constant, ties everywhere: area fractions
    cue = torch.zeros(4, 8, 8, dtype=torch.bool)
    cue[:, :2, :2] = True
    obj = torch.zeros(4, 8, 8, dtype=torch.bool)
    obj[:, 3:7, 3:7] = True
    f = bias.location_fractions(maps, obj, cue)
    assert f["on_cue"] == pytest.approx((1 + 4 / 64) / 4)
    assert f["on_object"] == pytest.approx((1 + 16 / 64) / 4)
    assert sum(f.values()) == pytest.approx(1.0)


def test_experiment_plumbing_with_given_models(monkeypatch):
    import hooklab.data.datasets as data

    monkeypatch.setattr(data, "make_biased_shapes", lambda n, seed=0, split="test": fake_split(n))
    test = fake_split()
    models = {"biased": RegionModel(test.cue_masks[0]), "rebalanced": RegionModel(test.masks[0])}
    seen = []

    def fit(arm, p):
        seen.append(p)
        return models[arm]

    res = bias.run_bias_experiment(8, method="hirescam", layer="conv", train_fn=fit)
    assert seen == [0.95, pytest.approx(1 / 6)]
    table = res.table()
    assert list(table["arm"]) == ["biased", "rebalanced"]
    assert res.arms["biased"].on_cue == 1.0 and res.arms["rebalanced"].on_object == 1.0
    assert res.layer == "conv" and res.method == "hirescam"
