"""One pass, many methods and layers: ``compute(model, x, methods=[...], layers=[...])``.

Each map equals the single-method ``compute`` exactly (the same code on the same values); the
model runs forward once for every gradient method and EigenCAM together (counted by a forward
hook on the model in the test); every layer's gradient equals plain autograd's.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooklab.cam import engine as cam
from hooklab.cam import methods as cam_methods
from hooklab.models.zoo import SimpleCNN
from tests.conftest import total_hooks

torchvision = pytest.importorskip("torchvision")

SIX = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]
STAGES = ["layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(3)
    return torch.randn(2, 3, 64, 64)


class Forwards:
    """Counts the model's forward calls while active."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.n = model, 0

    def __enter__(self) -> Forwards:
        self.h = self.model.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))
        return self

    def __exit__(self, *exc: object) -> None:
        self.h.remove()


@pytest.mark.parametrize("target,methods", [([3, 7], SIX), ("topk:2", ["layercam", "eigencam"])])
def test_24_maps_from_one_forward_equal_the_single_calls(resnet, batch, target, methods,
                                                         no_leak):
    with no_leak(resnet), Forwards(resnet) as fw:
        res = cam.compute(resnet, batch, methods=methods, layers=STAGES, target=target)
    assert fw.n == 1 and res.forwards == 1
    assert len(res) == 4 * len(methods) and res.methods == tuple(methods)
    assert res.layers == tuple(STAGES)
    for (method, layer), one in res.items():
        single = cam.compute(resnet, batch, method, layer=layer, target=target)
        assert one.layers == (layer,) and one.method == method
        assert torch.equal(one.raw, single.raw), (method, layer)
        assert torch.equal(one.maps, single.maps), (method, layer)
        assert torch.equal(one.targets, single.targets) and torch.equal(one.sample, single.sample)
        assert float(one.raw.abs().max()) > 0, (method, layer)
    assert res.get_map("Layer-CAM", "layer2") is res["layercam", "layer2"]
    assert [r.layers[0] for r in res.by_method("layercam")] == STAGES
    assert total_hooks(resnet) == 0


def test_every_layers_gradient_is_autograds(resnet, batch):
    """HiResCAM is ``ReLU(Σ_c G ⊙ A)``: it shows each layer's ``G`` against plain autograd."""
    outs = {}
    hooks = [resnet.get_submodule(n).register_forward_hook(
        lambda _m, _i, o, n=n: outs.__setitem__(n, o)) for n in STAGES]
    try:
        with cam.frozen(resnet), torch.enable_grad():
            x = batch.clone().requires_grad_()
            logits = resnet(x)
            for o in outs.values():
                o.retain_grad()
            logits[[0, 1], [3, 7]].sum().backward()
    finally:
        for h in hooks:
            h.remove()
    res = cam.compute(resnet, batch, methods=["hirescam"], layers=STAGES, target=[3, 7])
    for n in STAGES:
        want = cam_methods.hirescam(outs[n].detach(), outs[n].grad)
        torch.testing.assert_close(res["hirescam", n].raw, want, rtol=1e-4,
                                   atol=1e-5 * float(want.abs().max()))


def test_model_calling_methods_run_after_on_their_own(no_leak):
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(2, 3, 32, 32)
    with no_leak(model), Forwards(model) as fw:
        res = cam.compute(model, x, methods=["gradcam", "scorecam", "eigencam"],
                          layers=["conv2", "conv3"], target=[1, 5], batch_size=64)
    # one shared forward; Score-CAM: per layer and image, channels / 64 masked forwards
    assert res.forwards == fw.n == 1 + 2 * (64 // 64) + 2 * (128 // 64)
    for (method, layer), one in res.items():
        single = cam.compute(model, x, method, layer=layer, target=[1, 5], batch_size=64)
        assert torch.equal(one.raw, single.raw), (method, layer)


def test_token_layers_in_one_pass():
    from tests.cam.test_tokens_engine import LAST_LN, tiny_vit, vit_oracle

    model = tiny_vit()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 32, 32)
    first = "encoder.layers.encoder_layer_0.ln_1"
    with Forwards(model) as fw:
        res = cam.compute(model, x, methods=SIX, layers=[first, LAST_LN], target=[1, 4, 7])
    assert fw.n == 1 and res["gradcam", first].note.startswith("tokens (B, 17, 32)")
    a, g, _ = vit_oracle(model, x, [1, 4, 7])
    for method in SIX:
        want = cam_methods.METHODS[method].map(a, g if method != "eigencam" else None)
        got = res[method, LAST_LN].raw
        atol = torch.full_like(want, 1e-5 * float(want.abs().max()))
        if method == "xgradcam":  # ill-conditioned on LayerNorm outputs: see the bound's doc
            atol = torch.maximum(atol, xgradcam_rounding_bound(a, g).to(atol.dtype))
        gap = (got - want).abs() - 1e-4 * want.abs() - atol
        assert float(gap.max()) <= 0, f"{method}: off the oracle by {float(gap.max()):.3g}"
        # the single call differs only by rounding: with the leaf at block 0, block 0's
        # attention runs PyTorch's differentiable path instead of its fused no-grad kernel
        single = cam.compute(model, x, method, layer=first, target=[1, 4, 7])
        torch.testing.assert_close(res[method, first].raw, single.raw, rtol=1e-4,
                                   atol=1e-5 * float(single.raw.abs().max()))


def xgradcam_rounding_bound(a, g, eps=1e-6):
    """First-order bound on how far XGrad-CAM's map moves when ``A`` and ``G`` carry relative
    errors of ``eps`` (two float32 paths to the same layer differ by about 1e-6).

    ``w_c = N_c / D_c`` with ``D_c = Σ A_c``: after a LayerNorm ``D_c`` can be close to 0 while
    ``Σ |A_c|`` is not (κ = 1749 on this tiny ViT), and the error of ``w_c`` grows with
    ``Σ|A_c| / |D_c|``. Measured on an AMD EPYC: the one-pass map was off the oracle by 1e-3
    (of 7.4), a tenth of this bound.
    """
    a, g = a.double(), g.double()
    n = (g * a).sum(dim=(2, 3))
    d = a.sum(dim=(2, 3)) + cam_methods._EPS
    dw = eps * ((g * a).abs().sum(dim=(2, 3)) / d.abs() + n.abs() * a.abs().sum(dim=(2, 3)) / d**2)
    return torch.einsum("bc,bchw->bhw", dw + eps * (n / d).abs(), a.abs())


def test_xgradcam_rounding_bound_is_not_slack():
    """The bound above is small where the sums are well away from 0 (else it would pass
    anything)."""
    torch.manual_seed(0)
    a, g = torch.rand(2, 8, 4, 4) + 0.5, torch.randn(2, 8, 4, 4)
    want = cam_methods.METHODS["xgradcam"].map(a, g)
    assert float(xgradcam_rounding_bound(a, g).max()) < 1e-4 * float(want.abs().max())


def test_bad_requests(resnet, batch):
    with pytest.raises(cam.CamError, match="names no method"):
        cam.compute(resnet, batch, methods=[], layers=STAGES)
    with pytest.raises(cam.CamError, match="unknown CAM method 'nope'"):
        cam.compute(resnet, batch, methods=["gradcam", "nope"])
    with pytest.raises(cam.CamError, match="no fuse"):
        cam.compute(resnet, batch, methods=["gradcam"], layers=STAGES, fuse="max")
    with pytest.raises(cam.NonSpatialLayerError, match="'fc'.*try 'layer4'"):
        cam.compute(resnet, batch, methods=["gradcam"], layers=["layer4", "fc"])
    res = cam.compute(resnet, batch, methods=["gradcam", "Grad-CAM"])  # auto layer, deduplicated
    assert list(res) == [("gradcam", "layer4")]
    with pytest.raises(cam.CamError, match="no map for"):
        res.get_map("layercam", "layer4")
    assert total_hooks(resnet) == 0
