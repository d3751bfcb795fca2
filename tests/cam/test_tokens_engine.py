"""CAMs on token layers: torchvision's ViT and Swin, and a tiny ViT with register tokens.

Every gradient is checked against an oracle: the model's forward written out at the target
layer, the spatial view of the patch tokens as a fresh leaf, ``torch.autograd.grad``. Models are
small (random weights, seeded) so each test takes a moment; the 224 px models are in the peer
tests and the benchmark.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hooklab
from hooklab.cam import engine as cam
from hooklab.cam import methods as cam_methods
from hooklab.core.errors import NonSpatialLayerError
from hooklab.models.zoo import auto_target_layer
from tests.conftest import total_hooks

torchvision = pytest.importorskip("torchvision")

PURE = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]
LAST_LN = "encoder.layers.encoder_layer_1.ln_1"


def tiny_vit() -> nn.Module:
    """torchvision's ViT at 32 px, patch 8 (a 4×4 grid + the class token), 2 blocks, width 32.

    torchvision zero-initialises the head; a random head makes the logits depend on the input.
    """
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)


def vit_oracle(model, x, targets):
    """``A`` (the last block's ``ln_1`` patch tokens as ``(B, D, 4, 4)``), ``dS/dA``, logits."""
    enc = model.encoder
    with torch.no_grad():
        t = model._process_input(x)
        t = torch.cat([model.class_token.expand(x.shape[0], -1, -1), t], dim=1)
        t = enc.dropout(t + enc.pos_embedding)
        for blk in list(enc.layers)[:-1]:
            t = blk(t)
        last = enc.layers[-1]
        ln = last.ln_1(t)
    a = ln[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, 4, 4).clone().requires_grad_()
    with torch.enable_grad():
        tok = torch.cat([ln[:, :1], a.flatten(2).transpose(1, 2)], dim=1)
        y, _ = last.self_attention(tok, tok, tok, need_weights=False)
        y = last.dropout(y) + t
        z = y + last.mlp(last.ln_2(y))
        logits = model.heads(enc.ln(z)[:, 0])
        score = logits[torch.arange(x.shape[0]), torch.as_tensor(targets)].sum()
        (g,) = torch.autograd.grad(score, a)
    return a.detach(), g, logits.detach()


def test_auto_layer_is_the_last_blocks_first_norm(vit, images):
    assert auto_target_layer(vit, (3, 32, 32)) == LAST_LN
    assert cam.auto_layer(vit, images) == LAST_LN
    assert auto_target_layer(torchvision.models.swin_t(), (3, 64, 64)) == "norm"
    # CNNs unchanged
    assert auto_target_layer(torchvision.models.resnet18(), (3, 64, 64)) == "layer4"
    assert auto_target_layer(hooklab.models.SimpleCNN()) == "conv3"


@pytest.mark.parametrize("method", PURE)
def test_vit_maps_equal_the_formula_on_the_oracle(vit, images, method, no_leak):
    targets = [1, 4, 7]
    a, g, logits = vit_oracle(vit, images, targets)
    with no_leak(vit):
        res = cam.compute(vit, images, method, target=targets)
    assert res.layers == (LAST_LN,)
    assert res.note == "tokens (B, 17, 32) → grid 4×4, class token dropped"
    assert res.layout is not None and res.layout.grid == (4, 4)
    torch.testing.assert_close(res.logits, logits, rtol=1e-5, atol=1e-5)
    want = cam_methods.METHODS[method].map(a, g if method != "eigencam" else None)
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(res.raw, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    assert res.maps.shape == (3, 32, 32)


def swin_oracle(model, x, targets):
    """torchvision Swin at ``norm``: ``A`` = norm's output permuted to ``(B, C, h, w)``."""
    with torch.no_grad():
        out = model.norm(model.features(x))
    a = out.permute(0, 3, 1, 2).clone().requires_grad_()
    with torch.enable_grad():
        logits = model.head(model.flatten(model.avgpool(a)))
        score = logits[torch.arange(x.shape[0]), torch.as_tensor(targets)].sum()
        (g,) = torch.autograd.grad(score, a)
    return a.detach(), g, logits.detach()


def test_swin_channel_last_maps_equal_the_oracle(no_leak):
    torch.manual_seed(0)
    model = torchvision.models.swin_t(num_classes=10).eval()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    a, g, logits = swin_oracle(model, x, [3, 8])
    with no_leak(model):
        res = cam.compute(model, x, "gradcam", target=[3, 8])
    assert res.layers == ("norm",)
    assert res.note == "channels-last (B, 2, 2, 768) → (B, 768, 2, 2)"
    torch.testing.assert_close(res.logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.raw, cam_methods.gradcam(a, g), rtol=1e-4, atol=1e-6)
    # a stage output (channel-last too) deeper inside
    res = cam.compute(model, x, "layercam", layer="features.5", target=[3, 8])
    assert res.layout.kind == "channels_last" and res.raw.shape == (2, 4, 4)


class RegisterViT(nn.Module):
    """A ViT with a class token and two register tokens in front (as DINOv2), 16 px, patch 4."""

    patch_size = 4

    def __init__(self, dim: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.reg = nn.Parameter(torch.randn(1, 2, dim))
        self.pos = nn.Parameter(torch.randn(1, 19, dim) * 0.1)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "norm1": nn.LayerNorm(dim),
            "attn": nn.MultiheadAttention(dim, 2, batch_first=True),
            "norm2": nn.LayerNorm(dim),
            "mlp": nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Linear(32, dim)),
        }) for _ in range(2))
        self.head = nn.Linear(dim, classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        p = self.embed(x).flatten(2).transpose(1, 2)
        n = x.shape[0]
        return torch.cat([self.cls.expand(n, -1, -1), self.reg.expand(n, -1, -1), p], 1) + self.pos

    def block(self, i: int, t: torch.Tensor, normed: torch.Tensor | None = None) -> torch.Tensor:
        b = self.blocks[i]
        h = b["norm1"](t) if normed is None else normed
        t = t + b["attn"](h, h, h, need_weights=False)[0]
        return t + b["mlp"](b["norm2"](t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x)
        for i in range(len(self.blocks)):
            t = self.block(i, t)
        return self.head(t[:, 0])


def test_register_tokens_are_dropped_and_the_gradient_is_the_oracles(no_leak):
    torch.manual_seed(0)
    model = RegisterViT().eval()
    x = torch.randn(2, 3, 16, 16)
    assert auto_target_layer(model, (3, 16, 16)) == "blocks.1.norm1"
    with no_leak(model):
        res = cam.compute(model, x, "hirescam", target=[0, 3])
    assert res.note == "tokens (B, 19, 16) → grid 4×4, 3 extra tokens dropped (class + 2 register)"
    with torch.no_grad():
        t = model.block(0, model.tokens(x))
        ln = model.blocks[1]["norm1"](t)
    a = ln[:, 3:].transpose(1, 2).reshape(2, 16, 4, 4).clone().requires_grad_()
    normed = torch.cat([ln[:, :3], a.flatten(2).transpose(1, 2)], 1)
    logits = model.head(model.block(1, t, normed)[:, 0])
    (g,) = torch.autograd.grad(logits[[0, 1], [0, 3]].sum(), a)
    torch.testing.assert_close(res.raw, cam_methods.hirescam(a.detach(), g), rtol=1e-4,
                               atol=1e-6)


def test_an_attention_output_is_refused_naming_the_norms(vit, images):
    before = total_hooks(vit)
    with pytest.raises(NonSpatialLayerError, match=r"a tuple.*try 'encoder\.layers\."
                                                   r"encoder_layer_1\.ln_1'.*LayerNorm layers "
                                                   r"that give a map: .*encoder_layer_0\.ln_1"):
        cam.compute(vit, images, layer="encoder.layers.encoder_layer_1.self_attention")
    assert total_hooks(vit) == before == 0


def test_a_swin_map_forced_as_tokens_is_refused(no_leak):
    torch.manual_seed(0)
    model = torchvision.models.swin_t(num_classes=10).eval()
    with no_leak(model), pytest.raises(NonSpatialLayerError, match="channel-last.*Swin"):
        cam.compute(model, torch.randn(1, 3, 64, 64), layer="norm", layout="tokens")


def test_no_hook_is_left_after_an_exception_in_a_token_layer(vit, images, no_leak):
    class Boom(RuntimeError):
        pass

    def explode(*_):
        raise Boom("injected")

    h = vit.encoder.layers[1].mlp.register_forward_hook(explode)
    try:
        before = total_hooks(vit)
        with pytest.raises(Boom):
            cam.compute(vit, images, "gradcam")
        with pytest.raises(Boom):
            cam.compute(vit, images, methods=["gradcam", "eigencam"],
                        layers=[LAST_LN, "encoder.layers.encoder_layer_0.ln_1"])
        assert total_hooks(vit) == before
    finally:
        h.remove()
    assert total_hooks(vit) == 0


def test_context_on_a_token_layer(vit, images):
    """with_layer_output and capture on a token layer, against the written-out forward."""
    targets = torch.tensor([1, 4, 7])
    a, g, logits = vit_oracle(vit, images, targets.tolist())
    with torch.no_grad():
        acts, _ = cam._capture(vit, images, [LAST_LN], need_grad=False)
    lays: dict = {}
    with torch.no_grad():
        cam._capture(vit, images, [LAST_LN], need_grad=False, layouts=lays)
    ctx = cam._context(vit, images, LAST_LN, acts[LAST_LN].float(), None, targets, 2,
                       layout=lays[LAST_LN])
    torch.testing.assert_close(ctx.acts, a)
    rep = a[2:3].repeat(3, 1, 1, 1)
    rep[1, 5] = 0
    rep[2] = 0
    out = ctx.with_layer_output(2, rep)  # batch_size 2: two chunks
    # the oracle's head on the same replaced activations (image 2's class token kept)
    x2 = images[2:3].expand(3, -1, -1, -1)
    enc = vit.encoder
    with torch.no_grad():
        t = vit._process_input(x2)
        t = torch.cat([vit.class_token.expand(3, -1, -1), t], 1) + enc.pos_embedding
        t = enc.layers[0](t)
        last = enc.layers[1]
        ln = last.ln_1(t)
        tok = torch.cat([ln[:, :1], rep.flatten(2).transpose(1, 2)], 1)
        y = last.self_attention(tok, tok, tok, need_weights=False)[0] + t
        want = vit.heads(enc.ln(y + last.mlp(last.ln_2(y)))[:, 0])
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[0], logits[2], rtol=1e-4, atol=1e-5)
    a2, g2 = ctx.capture(images)
    torch.testing.assert_close(a2, a)
    torch.testing.assert_close(g2, g, rtol=1e-4, atol=1e-6)
    # a graph on request: attention is not piecewise linear, the Hessian-vector product is not 0
    with cam.frozen(vit):  # as inside compute: the leaf is the layer's spatial view
        a3, g3 = ctx.capture(images, create_graph=True)
        assert a3.requires_grad and a3.is_leaf and g3.requires_grad
        (hvp,) = torch.autograd.grad(g3, a3, grad_outputs=a3.detach())
    assert float(hvp.abs().max()) > 0
    assert total_hooks(vit) == 0


def test_scorecam_on_a_token_layer_runs_through_the_context(vit, images, no_leak):
    with no_leak(vit):
        res = cam.compute(vit, images[:1], "scorecam", target=[2])
    a, _, _ = vit_oracle(vit, images[:1], [2])
    up = cam_methods.minmax(F.interpolate(a, size=(32, 32), mode="bilinear",
                                          align_corners=False)[0])
    with torch.no_grad():
        probs = torch.softmax(vit(images[:1] * up[:, None]), dim=1)[:, 2]
    want = F.relu(torch.einsum("c,chw->hw", probs, a[0]))[None]
    torch.testing.assert_close(res.raw, want, rtol=1e-4, atol=1e-6)


def test_cam_from_trace_on_a_recorded_vit_layer(vit, images, no_leak):
    with no_leak(vit):
        with hooklab.record(vit, layers=LAST_LN, meta={"input_shape": list(images.shape)}) as rec:
            rec.run(images)  # each image's predicted class
    vit.zero_grad(set_to_none=True)
    for method in ("gradcam", "layercam", "eigencam"):
        stored = cam.cam_from_trace(rec.trace, LAST_LN, method)
        live = cam.compute(vit, images, method)
        assert stored.note == live.note == "tokens (B, 17, 32) → grid 4×4, class token dropped"
        torch.testing.assert_close(stored.raw, live.raw, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stored.maps, live.maps, rtol=1e-4, atol=1e-5)
    assert cam.cam_from_trace(rec.trace, LAST_LN, patch=8).layout.grid == (4, 4)
