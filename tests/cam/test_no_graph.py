"""A forward that runs under ``torch.no_grad()`` after the target layer: gradient CAMs are one
CamError naming the layer (not autograd's "element 0 of tensors does not require grad"), the
gradient-free ones still work, and no hook is left on the model either way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooklab.cam import CamError, compute
from hooklab.recording.inventory import hooks_on


class NoGradTail(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        with torch.no_grad():
            a = a.relu()
        return self.fc(a.mean((2, 3)))


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam"])
def test_gradient_cams_name_the_layer(method):
    model = NoGradTail().eval()
    with pytest.raises(CamError, match=r"no autograd graph back to 'conv'.*torch\.no_grad"):
        compute(model, torch.randn(2, 3, 8, 8), method=method, layer="conv")
    assert hooks_on(model).empty


def test_a_model_calling_gradient_method_names_the_layer_too():
    model = NoGradTail().eval()
    with pytest.raises(CamError, match="no autograd graph back to 'conv'"):
        compute(model, torch.randn(1, 3, 8, 8), method="smoothgradcampp", layer="conv")
    assert hooks_on(model).empty


def test_gradient_free_methods_still_work():
    model = NoGradTail().eval()
    res = compute(model, torch.randn(2, 3, 8, 8), method="eigencam", layer="conv")
    assert res.maps.shape == (2, 8, 8)
    assert torch.isfinite(res.maps).all() and res.maps.amax() > 0
    assert hooks_on(model).empty
