"""Methods without a layer gradient read a copy of the activation, not an alias of it.

pytorch-grad-cam keeps an activation that aliases the module output, so a later in-place op
changes it (DenseNet-121 ``features.norm5``); hooklab's no-gradient path did the same until this
test: EigenCAM at a conv followed by ``ReLU(inplace=True)`` read the ReLU'd activation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooklab.cam import engine
from hooklab.cam.methods import eigencam


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()


@pytest.mark.parametrize("method", ["eigencam", "scorecam"])
def test_no_grad_methods_see_the_layer_output_before_an_inplace_relu(method):
    model = _net()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        pre = model[0](x)
    acts, _ = engine._capture(model, x, ["0"], need_grad=False)
    torch.testing.assert_close(acts["0"], pre)  # not relu(pre)
    assert bool((pre < 0).any())  # the test can fail: the ReLU changes something
    if method == "eigencam":
        res = engine.compute(model, x, method, layer="0")
        torch.testing.assert_close(res.raw, eigencam(pre))
    assert all(not m._forward_hooks for m in model.modules())
