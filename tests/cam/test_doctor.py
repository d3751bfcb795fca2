"""The CAM doctor: each diagnosis on a model built to cause it; no hook is left behind."""

from __future__ import annotations

import torch
from torch import nn

from hooklab.cam import compute
from hooklab.cam.doctor import CAUSES, diagnose, probe


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


class Net(nn.Module):
    """conv -> ReLU (target 'act') -> mean -> head, with a switchable defect."""

    def __init__(self, defect: str = "") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.defect = defect
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.up = nn.Upsample(size=(4, 4))
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 1, 1, 1], [-1.0, -1, -1, -1]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.conv(x))
        if self.defect == "pooled":
            a = self.up(self.pool(a))
        if self.defect == "no_grad":
            with torch.no_grad():
                return self.fc(a.mean(dim=(2, 3)))
        if self.defect == "unused":
            return self.fc(x.mean(dim=(2, 3)).repeat(1, 2)[:, :4]) + 0 * a.sum()
        out = self.fc(a.mean(dim=(2, 3)))
        return torch.softmax(out * 1e4, dim=1) if self.defect == "softmax" else out


def _x() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5


def _cause(defect: str, layer: str = "act", **kw) -> str:
    model = Net(defect)
    res = compute(model, _x(), "gradcam", layer=layer, **kw)
    found = diagnose(res, model, _x())
    assert _hooks(model) == 0
    assert found, "a defect model's maps should be diagnosed"
    assert found[0].message.endswith(CAUSES[found[0].cause])
    return found[0].cause


def test_healthy_maps_have_no_finding():
    model = Net()
    res = compute(model, _x(), "gradcam", layer="act")
    assert diagnose(res, model, _x()) == []


def test_each_defect_is_named():
    model = Net("no_grad")
    try:  # the gradient itself fails: no map comes back, probe() names the cause
        compute(model, _x(), "gradcam", layer="act")
    except (RuntimeError, ValueError):
        pass
    assert probe(model, _x(), "act") == "no_grad" and _hooks(model) == 0
    assert probe(Net(), _x(), "act") is None
    assert _cause("unused") == "no_gradient"
    assert _cause("softmax") == "saturated"
    assert _cause("pooled", layer="up") == "after_pooling"
    assert _cause("", target=1) == "wrong_class"  # class 1 = minus the evidence: blank


def test_nan_weights():
    model = Net()
    with torch.no_grad():
        model.conv.weight[0, 0, 0, 0] = float("nan")
    res = compute(model, _x(), "gradcam", layer="act")
    found = diagnose(res, model, _x())
    assert found[0].symptom == "nan" and found[0].cause == "nan"


def test_same_map_for_every_class():
    model = Net()
    res = compute(model, _x(), "eigencam", layer="act", target="topk:2")
    found = diagnose(res, model, _x())
    assert [d.cause for d in found] == ["class_agnostic"] and found[0].maps == (0, 1)


def test_without_the_model_it_says_what_it_needs():
    model = Net("unused")
    res = compute(model, _x(), "gradcam", layer="act")
    (d,) = diagnose(res)
    assert d.symptom == "blank" and "pass the model and the input" in d.message
