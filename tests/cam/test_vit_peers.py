"""hooklab's CAMs on token maps against pytorch-grad-cam 1.5.7 with its ``reshape_transform``.

Models: torchvision ``vit_b_16`` (at ``encoder.layers.encoder_layer_11.ln_1``, what hooklab's
``auto_target_layer`` picks) and ``swin_t`` (at ``norm``), random weights (seed 0), built for a
64 px input so the tests are quick (a 4×4 patch grid plus the class token; Swin's last stage is
2×2); Score-CAM (one masked forward per channel) on a small torchvision ViT (width 32). Per-image
targets ``[top-1 of image 0, top-2 of image 1]``. torchvision zero-initialises the ViT head (all
logits 0, every gradient 0); the fixtures draw it at random so the maps are not empty.

The peer is given its documented transforms: for ViT (``usage_examples/vit_example.py``)
``tensor[:, 1:, :].reshape(B, h, w, D).transpose(2, 3).transpose(1, 2)``; for Swin
(``swinT_example.py``, written for timm's ``(B, h·w, C)``) the same transposes, without the
reshape (torchvision's Swin already gives ``(B, h, w, C)``). hooklab infers both.

What is compared and the alignments are those of ``test_cam_peers.py`` (raw maps after the
method's ReLU, before resizing; pytorch-grad-cam's final maps against ``maps``; Grad-CAM++'s ε set
to the peer's; EigenCAM's sign rule applied to the peer's projection; Score-CAM with a ``log p``
target, masks upsampled with ``align_corners=False``, maps compared divided by their maximum).
Tolerance: ``rtol = 1e-4``, ``atol = 1e-5 ×`` the map's maximum (measured gaps ≤ 1.2e-6 of the
maximum for Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM and EigenCAM on both models; both sides
are float32 sums over 768 channels in different orders). XGrad-CAM is ill-conditioned after a
LayerNorm; there the float64 formula decides (:func:`_xgradcam_oracle_decides`). The oracle for
the gradients (the written-out forward) is in ``tests/cam/test_tokens_engine.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.cam import engine as cam
from hooklab.cam import methods as cam_methods
from tests.conftest import total_hooks

pgc_lib = pytest.importorskip("pytorch_grad_cam")
torchvision = pytest.importorskip("torchvision")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

RTOL = 1e-4
REL_ATOL = 1e-5
PGC_EPS_GRADCAMPP = 1e-6  # pytorch_grad_cam/grad_cam_plusplus.py

PGC = {
    "gradcam": pgc_lib.GradCAM,
    "gradcam++": pgc_lib.GradCAMPlusPlus,
    "xgradcam": pgc_lib.XGradCAM,
    "hirescam": pgc_lib.HiResCAM,
    "layercam": pgc_lib.LayerCAM,
    "eigencam": pgc_lib.EigenCAM,
}


def vit_reshape(h: int, w: int):
    """pytorch-grad-cam's documented ViT ``reshape_transform`` (vit_example.py)."""

    def reshape_transform(tensor):
        result = tensor[:, 1:, :].reshape(tensor.size(0), h, w, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


def swin_reshape(tensor):
    """pytorch-grad-cam's Swin transform (swinT_example.py) for torchvision's (B, h, w, C)."""
    return tensor.transpose(2, 3).transpose(1, 2)


class LogProb:
    """A peer target: ``log softmax(logits)[t]``."""

    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(out, dim=-1)[..., self.t]


def pgc(cls, model, layer, x, targets, reshape, target_type=ClassifierOutputTarget,
        batch_size=None):
    """The peer's pre-ReLU map ``(B, h, w)`` (its ``get_cam_image``) and its final maps."""
    extractor = cls(model=model, target_layers=[layer], reshape_transform=reshape)
    if batch_size is not None:
        extractor.batch_size = batch_size
    captured = []
    original = extractor.get_cam_image

    def keep(*args, **kwargs):
        out = original(*args, **kwargs)
        captured.append(np.array(out, copy=True))
        return out

    extractor.get_cam_image = keep
    try:
        final = extractor(input_tensor=x, targets=[target_type(int(t)) for t in targets])
    finally:
        extractor.activations_and_grads.release()
    assert len(captured) == 1
    return torch.from_numpy(captured[0]).float(), torch.from_numpy(np.asarray(final)).float()


def skew_sign(proj):
    return torch.where(proj.double().flatten(1).pow(3).sum(1) < 0, -1.0, 1.0).float()[:, None, None]


def by_max(maps):
    return maps / maps.amax(dim=(-2, -1), keepdim=True)


def gap(actual, expected) -> float:
    """Largest difference relative to the reference map's maximum."""
    scale = float(expected.abs().max())
    assert scale > 0, "the reference map is all zeros; the comparison would be empty"
    return float((actual - expected).abs().max()) / scale


def close(actual, expected, what):
    scale = float(expected.abs().max())
    assert scale > 0, f"{what}: the reference map is all zeros"
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=REL_ATOL * scale, msg=what)


def _targets(model, x):
    with torch.no_grad():
        logits = model(x)
    return [int(logits[0].argmax()), int(logits[1].topk(2).indices[1])]


def _vit():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=64)
    nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.eval()


def _swin():
    torch.manual_seed(0)
    return torchvision.models.swin_t().eval()


CASES = {
    "vit_b_16": (_vit, "encoder.layers.encoder_layer_11.ln_1", vit_reshape(4, 4)),
    "swin_t": (_swin, "norm", swin_reshape),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    build, layer, reshape = CASES[request.param]
    model = build()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    return request.param, model, layer, reshape, x, _targets(model, x)


def _ours(model, x, method, layer, targets, no_leak):
    assert total_hooks(model) == 0, "a peer left a hook on the model"
    with no_leak(model):
        res = cam.compute(model, x, method, layer=layer, target=targets)
    assert res.targets.tolist() == list(targets)
    return res


def test_pytorch_grad_cam_agrees_on_token_maps(case, no_leak, monkeypatch):
    """The six pure methods from hooklab's one shared pass, each against the peer's own call
    (the single-method call gives the same maps: ``test_one_pass.py``; checked for Grad-CAM)."""
    name, model, layer, reshape, x, targets = case
    assert cam.auto_layer(model, x) == layer  # the layer the peer's docs recommend
    monkeypatch.setattr(cam_methods, "_EPS", PGC_EPS_GRADCAMPP)  # Grad-CAM++'s ε; XGrad-CAM's too
    assert total_hooks(model) == 0
    with no_leak(model):
        many = cam.compute(model, x, methods=list(PGC), layers=[layer], target=targets)
        single = cam.compute(model, x, "gradcam", layer=layer, target=targets)
    assert torch.equal(single.raw, many["gradcam", layer].raw)
    for method, cls in PGC.items():
        res = many[method, layer]
        assert res.targets.tolist() == list(targets)
        pre, final = pgc(cls, model, model.get_submodule(layer), x, targets, reshape)
        if method == "eigencam":
            close(F.relu(pre * skew_sign(pre)), res.raw, f"{name} {method}: raw maps")
            continue
        if method == "xgradcam":
            _xgradcam_oracle_decides(model, x, layer, targets, res.raw, F.relu(pre), name)
            continue
        close(F.relu(pre), res.raw, f"{name} {method}: raw maps")
        torch.testing.assert_close(final, res.maps, rtol=0, atol=1e-4,
                                   msg=f"{name} {method}: final maps")


def _xgradcam_oracle_decides(model, x, layer, targets, ours, peer, name):
    """XGrad-CAM divides by ``Σ_ij A_cij``; after a LayerNorm that sum nearly cancels for some
    channels (``Σ|A_c| / |Σ A_c|`` measured 1.4e3 on vit_b_16, 4.3e4 on swin_t), so float32
    evaluations in different orders differ by that factor times float32's rounding. The oracle
    is the formula in float64 on the same ``A`` and ``G``: hooklab is within 1e-4 of it
    (measured 3.4e-6 and 1.5e-5), the peer within 1e-3 (measured 3.5e-4 and 1.8e-5)."""
    with cam.frozen(model):
        a, g = cam._capture_grads(model, x, layer, torch.tensor(targets), False)
    ad, gd = a.double(), g.double()
    cancel = float((ad.abs().sum((2, 3)) / ad.sum((2, 3)).abs()).max())
    assert cancel > 100, f"{name}: Σ A no longer cancels ({cancel:.0f}); compare as the others"
    w = (gd * ad).sum((2, 3)) / (ad.sum((2, 3)) + PGC_EPS_GRADCAMPP)
    formula = F.relu(torch.einsum("bc,bchw->bhw", w, ad)).float()
    assert gap(ours, formula) < 1e-4, f"{name} xgradcam: hooklab vs the float64 formula"
    assert gap(peer, formula) < 1e-3, f"{name} xgradcam: peer vs the float64 formula"


def test_scorecam_agrees_on_a_small_vit(no_leak, monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.5)
    model.eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    targets = _targets(model, x)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    res = _ours(model, x, "scorecam", layer, targets, no_leak)

    def upsample_like_hooklab(size):
        return torch.nn.Upsample(size=size, mode="bilinear", align_corners=False)

    with monkeypatch.context() as mp:
        mp.setattr(torch.nn, "UpsamplingBilinear2d", upsample_like_hooklab)
        pre, _ = pgc(pgc_lib.ScoreCAM, model, model.get_submodule(layer), x, targets,
                     vit_reshape(4, 4), target_type=LogProb, batch_size=128)
    close(by_max(F.relu(pre)), by_max(res.raw), "small vit scorecam")


def test_a_wrong_reshape_would_show(case, no_leak):
    """The peer given a transform that keeps the class token in the grid (or Swin's axes
    swapped) gives measurably different maps: the agreement above is not a coincidence."""
    name, model, layer, reshape, x, targets = case
    res = _ours(model, x, "gradcam", layer, targets, no_leak)
    if name == "vit_b_16":
        def wrong(t):  # the last patch token dropped instead of the class token
            return t[:, :-1, :].reshape(t.size(0), 4, 4, t.size(2)).permute(0, 3, 1, 2)
    else:
        def wrong(t):  # H and W swapped
            return t.permute(0, 3, 2, 1)
    pre, _ = pgc(PGC["gradcam"], model, model.get_submodule(layer), x, targets, wrong)
    assert gap(by_max(F.relu(pre)), by_max(res.raw)) > 1e-2
