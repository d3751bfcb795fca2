"""The MPRT cascade and the data-randomisation test: the caller's model is never changed and
keeps no hook, every step is the map of a seeded randomised copy, every registered method runs,
Grad-CAM falls apart on the shipped SimpleCNN while EigenCAM does not, bad input is one error."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from hooklab.cam import METHODS, compute
from hooklab.cam import sanity as S
from hooklab.cam.similarity import spearman
from hooklab.core.errors import HooklabError
from hooklab.data.datasets import make_shapes
from hooklab.models import zoo


class Tiny(nn.Module):
    """Conv, conv, global average pooling, one Linear (so CAM's fc head exists too)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def _x(n: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_cascade_layers_top_down_by_call_order():
    cnn = zoo.SimpleCNN(6)
    x = make_shapes(2, split="test").images
    assert S.cascade_layers(cnn, x) == ["fc2", "fc1", "conv3", "conv2", "conv1"]
    tiny = Tiny()
    assert S.cascade_layers(tiny, _x()) == ["fc", "body.2", "body.0"]
    assert S.cascade_layers(tiny, _x(), depth="top") == ["fc", "body"]


def test_steps_are_seeded_randomised_copies_and_the_model_is_untouched():
    model = Tiny().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _x()
    res = S.mprt(model, x, "gradcam", layer="body.2")
    assert res.randomised == ["fc", "body.2", "body.0"]
    assert res.maps.shape == (4, 3, 16, 16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert _hooks(model) == 0
    for k in range(1, 4):
        clone = S.randomised_copy(model, res.randomised[:k])
        want = compute(clone, x, "gradcam", layer="body.2", target=res.targets).maps
        assert torch.allclose(res.maps[k], want, atol=1e-6)
        assert torch.allclose(res.spearman[k], spearman(res.maps[0], want).nan_to_num(0.0),
                              atol=1e-6)
        for name, p in clone.named_parameters():  # randomised exactly the first k layers
            changed = not torch.equal(p, dict(model.named_parameters())[name])
            assert changed == any(name.startswith(n + ".") for n in res.randomised[:k]), name
    assert torch.allclose(res.spearman[0], torch.ones(3)) and torch.allclose(res.ssim[0],
                                                                             torch.ones(3))
    again = S.mprt(model, x, "gradcam", layer="body.2")
    assert torch.equal(again.maps, res.maps)  # seeded
    assert list(res.table()["layer"]) == ["original", "fc", "body.2", "body.0"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_runs_the_cascade(method):
    model = Tiny().eval()
    try:
        compute(model, _x(2), method, layer="body.3")  # before the pool (CAM's layer)
    except HooklabError as exc:  # a method this model cannot have (attention on a CNN)
        with pytest.raises(type(exc), match=re.escape(str(exc)[:40])):
            S.mprt(model, _x(2), method, layer="body.3", depth="top")
        assert _hooks(model) == 0
        return
    res = S.mprt(model, _x(2), method, layer="body.3", depth="top")
    assert res.method == METHODS[res.method].name and res.maps.shape == (3, 2, 16, 16)
    assert res.spearman.shape == (3, 2) and res.ssim.shape == (3, 2)
    assert isinstance(res.passed, bool) and res.title in res.verdict
    assert _hooks(model) == 0


def test_gradcam_falls_apart_on_the_shipped_model_and_eigencam_does_not():
    model = zoo.shipped_model("simple_cnn_shapes")
    x = make_shapes(32, split="test").images
    grad = S.mprt(model, x, "gradcam")
    eigen = S.mprt(model, x[:8], "eigencam")
    # measured (32 images): Grad-CAM Spearman 0.15, SSIM 0.13 at full randomisation;
    # EigenCAM 0.92 / 0.72
    assert grad.final["spearman"] < 0.3 and grad.passed
    assert eigen.final["spearman"] > 0.6 and not eigen.passed
    assert "fall apart" in grad.verdict and "stay alike" in eigen.verdict
    assert "edge detector" in grad.expected


def test_data_randomisation_on_the_shipped_weights():
    x = make_shapes(16, split="test").images
    res = S.data_randomisation(x, "gradcam")
    assert res.models == (S.TRAINED, S.SHUFFLED)
    assert res.trained.shape == res.shuffled.shape == (16, 32, 32)
    trained = zoo.shipped_model(S.TRAINED)
    assert torch.allclose(res.trained, compute(trained, x, "gradcam").maps)
    assert res.final["spearman"] < 0.5  # the maps differ (measured in the report)
    assert res.passed == (max(res.final.values()) <= res.threshold)


def test_bad_input_is_one_clear_error():
    class NoParamsAbove(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv(x)).mean(dim=(2, 3))

    model = NoParamsAbove()
    with pytest.raises(S.SanityError, match=r"no layer at or above 'act'.*at or below 'conv'"):
        S.mprt(model, _x(), "gradcam", layer="act")
    assert _hooks(model) == 0
    tiny = Tiny()
    with pytest.raises(S.SanityError, match="unknown CAM method"):
        S.mprt(tiny, _x(), "nosuchcam")
    with pytest.raises(S.SanityError, match=r"no layer 'nope' to randomise"):
        S.mprt(tiny, _x(), "gradcam", layers=["fc", "nope"])
    assert _hooks(tiny) == 0
    with pytest.raises(S.SanityError, match="depth must be"):
        S.cascade_layers(tiny, _x(), depth="all")
    with pytest.raises(S.SanityError, match="no parameters to randomise"):
        S.cascade_layers(nn.Sequential(nn.ReLU()), _x())
