"""The one layer resolver and the one eval-mode / requires-grad save and restore."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooklab.core.errors import LayerNotFoundError
from hooklab.core.layers import close_names, resolve_layer, resolve_layers
from hooklab.core.modes import eval_mode, frozen


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 4, 3), nn.Dropout()), nn.Flatten())


def test_every_selector_form():
    net = _net()
    assert resolve_layers(net, "Conv2d") == ["0", "3.0"]
    assert resolve_layers(net, nn.Conv2d) == ["0", "3.0"]
    assert resolve_layers(net, "3.*") == ["3.0", "3.1"]
    assert resolve_layers(net, net[3][1]) == ["3.1"]
    assert resolve_layers(net, ["3.0", "0", "Conv2d"]) == ["0", "3.0"]  # model order, once
    assert resolve_layers(net, None) == ["0", "1", "2", "3.0", "3.1", "4"]
    assert resolve_layers(net, []) == []
    assert resolve_layer(net, "BatchNorm2d") == "1"
    with pytest.raises(LayerNotFoundError, match="matches 2 layers"):
        resolve_layer(net, "Conv2d")
    with pytest.raises(LayerNotFoundError, match="did you mean Conv2d"):
        resolve_layers(net, "Conv2D")
    with pytest.raises(LayerNotFoundError, match="model itself"):
        resolve_layers(net, net)
    with pytest.raises(LayerNotFoundError, match="not part of the model"):
        resolve_layers(net, nn.ReLU())
    with pytest.raises(LayerNotFoundError, match="not int"):
        resolve_layers(net, [3])
    assert "3.0" in close_names(net, "3.O") and close_names(net, "zzz") == []


@pytest.mark.parametrize("freeze", [False, True])
def test_eval_mode_restores_exactly_even_on_error(freeze):
    net = _net().train()
    net[1].eval()  # a mixed state comes back mixed
    net[0].weight.requires_grad_(False)
    before = ([m.training for m in net.modules()], [p.requires_grad for p in net.parameters()])
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(net, freeze=freeze) as m:
            assert m is net and not any(x.training for x in net.modules())
            assert any(p.requires_grad for p in net.parameters()) is not freeze
            raise RuntimeError("boom")
    assert ([m.training for m in net.modules()], [p.requires_grad for p in net.parameters()]) \
        == before
    with frozen(net):
        out = net(torch.randn(1, 3, 7, 7))
        assert not out.requires_grad
    assert ([m.training for m in net.modules()], [p.requires_grad for p in net.parameters()]) \
        == before
