"""Each CAM method against its published formula, computed independently in this file.

The reference captures the activation and its gradient with plain PyTorch (``retain_grad`` on the
layer output, a full ``backward``), evaluates the formula in float64 with explicit loops where the
paper writes sums, then resizes (bilinear, ``align_corners=False``) and min-max normalises.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hooklab.cam import engine as cam
from hooklab.models.zoo import SimpleCNN
from tests.peer_cams import reference_capture


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(3)
    model = SimpleCNN().eval()
    x = torch.randn(3, 3, 32, 32)
    return model, x


def finish(raw: torch.Tensor, size=(32, 32)) -> torch.Tensor:
    up = F.interpolate(raw[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    out = torch.zeros_like(up)
    for i in range(up.shape[0]):
        m = up[i] - up[i].min()
        out[i] = m / m.max() if m.max() > 0 else m
    return out


def ref_gradcam(a, g):
    b, c, h, w = a.shape
    cam_ = torch.zeros(b, h, w, dtype=torch.float64)
    for i in range(b):
        for k in range(c):
            cam_[i] += g[i, k].sum() / (h * w) * a[i, k]
    return cam_.clamp(min=0)


def ref_gradcampp(a, g):
    # alpha^kc_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3), weights w = sum_ij alpha ReLU(g)
    b, c, h, w = a.shape
    cam_ = torch.zeros(b, h, w, dtype=torch.float64)
    for i in range(b):
        for k in range(c):
            gk, ak = g[i, k], a[i, k]
            denom = 2 * gk ** 2 + ak.sum() * gk ** 3
            alpha = torch.where(gk != 0, gk ** 2 / (denom + 1e-7), torch.zeros_like(gk))
            wk = (alpha * gk.clamp(min=0)).sum()
            cam_[i] += wk * ak
    return cam_.clamp(min=0)


def ref_xgradcam(a, g):
    b, c, h, w = a.shape
    cam_ = torch.zeros(b, h, w, dtype=torch.float64)
    for i in range(b):
        for k in range(c):
            wk = (g[i, k] * a[i, k]).sum() / (a[i, k].sum() + 1e-7)
            cam_[i] += wk * a[i, k]
    return cam_.clamp(min=0)


def ref_hirescam(a, g):
    return sum(g[:, k] * a[:, k] for k in range(a.shape[1])).clamp(min=0)


def ref_layercam(a, g):
    return sum(g[:, k].clamp(min=0) * a[:, k] for k in range(a.shape[1])).clamp(min=0)


REFS = {"gradcam": ref_gradcam, "gradcam++": ref_gradcampp, "xgradcam": ref_xgradcam,
        "hirescam": ref_hirescam, "layercam": ref_layercam}


@pytest.mark.parametrize("method", list(REFS))
@pytest.mark.parametrize("layer", ["conv2", "conv3"])
def test_gradient_methods_match_formula(setup, no_leak, method, layer):
    model, x = setup
    targets = [1, 4, 9]
    a, g, _ = reference_capture(model, x, layer, targets)
    expected_raw = REFS[method](a, g)
    with no_leak(model):
        res = cam.compute(model, x, method=method, layer=layer, target=targets)
    torch.testing.assert_close(res.raw.double(), expected_raw, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.maps, finish(expected_raw), rtol=1e-4, atol=1e-5)
    assert res.targets.tolist() == targets
    assert res.maps.min() >= 0 and res.maps.max() <= 1


def test_scorecam_matches_formula(setup, no_leak):
    model, x = setup
    x = x[:2]
    layer = "conv1"  # 32 channels: 64 masked forwards in the reference loop
    with torch.no_grad():
        logits = model(x)
    targets = logits.argmax(1).tolist()
    store = {}
    h = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: store.__setitem__("a", out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    a = store["a"]
    expected = torch.zeros(2, *a.shape[-2:], dtype=torch.float64)
    with torch.no_grad():
        for i in range(2):
            for k in range(a.shape[1]):
                up = F.interpolate(a[i:i + 1, k:k + 1], size=(32, 32), mode="bilinear",
                                   align_corners=False)[0, 0]
                rng = up.max() - up.min()
                hk = (up - up.min()) / rng if rng > 0 else torch.zeros_like(up)
                prob = torch.softmax(model(x[i:i + 1] * hk), dim=1)[0, targets[i]]
                expected[i] += float(prob) * a[i, k].double()
    expected = expected.clamp(min=0)
    with no_leak(model):
        res = cam.compute(model, x, method="scorecam", layer=layer, batch_size=24)
    torch.testing.assert_close(res.raw.double(), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.maps, finish(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", ["conv1", "conv3"])  # more positions / more channels
def test_eigencam_is_first_principal_component(setup, no_leak, layer):
    model, x = setup
    store = {}
    h = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: store.__setitem__("a", out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    a = store["a"].double()
    b, c, hh, ww = a.shape
    expected = torch.zeros(b, hh, ww, dtype=torch.float64)
    for i in range(b):
        m = a[i].reshape(c, -1).T  # (positions, channels)
        m = m - m.mean(0, keepdim=True)
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        proj = m @ vh[0]  # first principal component (right singular vector)
        if (proj ** 3).sum() < 0:  # sign convention: positive skew
            proj = -proj
        expected[i] = proj.clamp(min=0).reshape(hh, ww)
    with no_leak(model):
        res = cam.compute(model, x, method="eigencam", layer=layer)
    torch.testing.assert_close(res.raw.double(), expected, rtol=1e-3, atol=1e-5)


def test_method_names_and_registry():
    assert set(cam.METHODS) >= {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam",
                                "scorecam", "eigencam"}  # the rest: tests/cam/test_new_methods.py
    from hooklab.cam.methods import method_name
    assert method_name("Grad-CAM++") == "gradcam++"
    assert method_name("grad_cam") == "gradcam"
    with pytest.raises(KeyError):
        method_name("nonsense")


def test_minmax_constant_map_is_zero():
    from hooklab.cam.methods import minmax
    out = minmax(torch.stack([torch.zeros(4, 4), torch.arange(16.0).reshape(4, 4)]))
    assert torch.equal(out[0], torch.zeros(4, 4))
    assert out[1].min() == 0 and out[1].max() == 1
