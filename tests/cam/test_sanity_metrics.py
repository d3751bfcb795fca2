"""metrics.compare_methods over the whole registry leaves out a method the model cannot have
(CAM needs a pooling + Linear head; attention methods a ViT); asked for by name, it raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooklab.cam import METHODS, CamError, compute
from hooklab.cam.metrics import compare_methods
from hooklab.core.errors import HooklabError


def test_registry_methods_the_model_cannot_have_are_left_out():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    possible = []
    for name in METHODS:
        try:
            compute(model, x, name, layer="1")
            possible.append(name)
        except HooklabError:
            pass
    assert "gradcam" in possible and "cam" not in possible  # no pooling + Linear head
    table = compare_methods(model, x, methods=None, layer="1", steps=2)
    assert list(table["method"]) == [*possible, "random"]
    with pytest.raises(CamError):
        compare_methods(model, x, methods=["cam"], layer="1", steps=2)
