"""The captured pass's memory format (hooklab.cam.memory): channels-last for torchvision's CNNs
by default, the caller's layout for every other model; the maps are the contiguous pass's up
to float32 rounding; a model that cannot take channels-last is one clear CamError; no hook is
left behind."""

from __future__ import annotations

import pytest
import torch
import torchvision

from hooklab.cam import engine as cam
from hooklab.cam import memory
from hooklab.models.zoo import get_model

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]


def _formats(model, x, fmt: str) -> list[bool]:
    """Whether each conv saw a channels-last (and not contiguous) input in one compute."""
    seen: list[bool] = []
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [c.register_forward_pre_hook(lambda _m, a: seen.append(
        a[0].is_contiguous(memory_format=torch.channels_last) and not a[0].is_contiguous()))
        for c in convs]
    try:
        cam.compute(model, x, "gradcam", layer="layer4" if hasattr(model, "layer4") else None,
                    memory_format=fmt)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_auto_is_channels_last_on_a_torchvision_cnn_only(resnet, no_leak):
    x = torch.randn(2, 3, 64, 64)
    with no_leak(resnet):
        auto = _formats(resnet, x, "auto")
        contiguous = _formats(resnet, x, "contiguous")
    assert auto and all(auto)
    assert contiguous and not any(contiguous)
    simple = get_model("simple_cnn", seed=0).eval()  # hooklab's own class (it calls .view())
    assert not memory.channels_last_cnn(simple)
    vit = get_model("simple_vit", seed=0).eval()  # a torchvision class with one conv
    assert not memory.channels_last_cnn(vit)
    assert memory.channels_last_cnn(resnet)
    assert memory.pass_input(resnet, torch.randn(3, 8), "auto").shape == (3, 8)  # not 4-D


@pytest.mark.parametrize("layer", ["layer1", "layer4"])
def test_channels_last_maps_equal_the_contiguous_pass(resnet, layer, no_leak):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with no_leak(resnet):
        a = cam.compute(resnet, x, methods=METHODS, layers=[layer], memory_format="contiguous")
        b = cam.compute(resnet, x, methods=METHODS, layers=[layer])
    for m in METHODS:
        ra, rb = a[m, layer].raw, b[m, layer].raw
        torch.testing.assert_close(rb, ra, rtol=1e-3, atol=1e-3 * float(ra.abs().max()))
        assert torch.equal(a[m, layer].targets, b[m, layer].targets)


def test_a_model_that_views_is_one_clear_error_and_leaves_no_hook(no_leak):
    model = get_model("simple_cnn", seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with no_leak(model), pytest.raises(cam.CamError, match="memory_format='contiguous'"):
        cam.compute(model, x, "gradcam", layer="conv3", memory_format="channels_last")
    res = cam.compute(model, x, "gradcam", layer="conv3")  # auto: the caller's layout
    assert res.maps.shape == (2, 32, 32)


def test_unknown_memory_format_is_refused(resnet):
    with pytest.raises(cam.CamError, match="unknown memory_format 'nhwc'"):
        cam.compute(resnet, torch.randn(1, 3, 32, 32), "gradcam", memory_format="nhwc")


def test_attention_above_the_layer_gets_sequence_first_tokens(monkeypatch, no_leak):
    """A gradient CAM below a batch-first MHA hands it tokens stored sequence-first (its input
    projection is then one matmul); the map is the same as without that hand-over."""
    vit = get_model("simple_vit", seed=0).eval()
    torch.manual_seed(2)
    x = torch.randn(3, 3, 32, 32)
    layer = "encoder.layers.encoder_layer_2.ln_1"
    mha = vit.get_submodule("encoder.layers.encoder_layer_3.self_attention")
    seen: list[bool] = []
    h = mha.register_forward_hook(lambda _m, a, _o: seen.append(
        a[0].transpose(0, 1).is_contiguous()))
    try:
        with no_leak(vit):
            fast = cam.compute(vit, x, "hirescam", layer=layer)
            monkeypatch.setattr(memory, "mha_sequence_first", lambda *_a: None)
            plain = cam.compute(vit, x, "hirescam", layer=layer)
    finally:
        h.remove()
    assert seen == [True, False]
    torch.testing.assert_close(fast.raw, plain.raw, rtol=1e-5, atol=1e-6)
