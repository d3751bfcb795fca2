"""The newer CAM methods (issue 14) against their formulas, recomputed here in plain PyTorch.

Each test captures what it needs with its own code (``retain_grad`` on a layer output and a full
``backward``, ``torch.autograd.grad`` / ``torch.autograd.functional.hvp`` on the written-out
forward), evaluates the formula in float64, and compares with hooklab's ``CamResult.raw`` (the
map at the layer's resolution after the method's ReLU, before resizing and normalisation).
Models are small and seeded; Score-CAM-family tests monkeypatch the sample counts down.
Every ``compute`` runs under ``no_leak`` (hooks, ``requires_grad`` and modes unchanged), also
when the model raises part-way.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hooklab.cam import engine as cam
from hooklab.cam import methods_model, methods_pure, methods_score
from hooklab.cam.methods import METHODS, eigencam, method_name, minmax, project
from hooklab.cam.smoothing import AUGMENTATIONS
from hooklab.models.zoo import SimpleCNN, get_model
from tests.peer_cams import gapnet, reference_capture

RTOL, ATOL = 1e-4, 1e-6


def close(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Equal within float32 rounding, relative to the expected map's maximum."""
    scale = float(expected.abs().max())
    assert scale > 0, f"{what}: the reference is all zeros; the comparison would be empty"
    torch.testing.assert_close(actual.double(), expected.double(), rtol=RTOL,
                               atol=RTOL * scale, msg=what)


def skewed(proj: torch.Tensor) -> torch.Tensor:
    """hooklab's sign rule on ``(B, n)`` projections, then ReLU."""
    sign = torch.where(proj.pow(3).sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(proj.dtype)
    return (proj * sign).clamp(min=0)


def svd_projection(w: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``get_2d_projection`` written out: (B, C, h, w) -> ReLU'd (B, h, w)."""
    b, c, h, ww = w.shape
    out = torch.zeros(b, h, ww, dtype=torch.float64)
    for i in range(b):
        m = w[i].double().reshape(c, -1).t()
        m = m - m.mean(dim=0)
        _, _, vh = torch.linalg.svd(m, full_matrices=False)
        out[i] = skewed((m @ vh[0])[None])[0].reshape(h, ww)
    return out


@pytest.fixture(scope="module")
def simple():
    torch.manual_seed(3)
    model = SimpleCNN().eval()
    x = torch.randn(2, 3, 32, 32)
    return model, x


@pytest.fixture(scope="module")
def zoo_cnn():
    """hooklab's seeded SimpleCNN on inputs whose Score-CAM maps are not empty (as the peers')."""
    model = get_model("simple_cnn", seed=0).eval()
    torch.manual_seed(1)
    return model, torch.randn(2, 3, 32, 32)


def run(no_leak, model, x, method, layer, targets, **kw):
    with no_leak(model):
        res = cam.compute(model, x, method, layer=layer, target=list(targets), **kw)
    assert res.targets.tolist() == list(targets)
    return res


# -- the registry -------------------------------------------------------------------------------

NEW = ["cam", "ablationcam", "eigengradcam", "gradcamelementwise", "kpcacam", "shapleycam",
       "fullgrad", "smoothgradcam++", "sscam", "iscam"]


def test_registry_has_the_new_methods_under_valid_names():
    assert set(NEW) <= set(METHODS)
    assert len(METHODS) >= 18
    for name, spec in METHODS.items():
        assert spec.name == name and name == name.lower()
        assert not any(ch in name for ch in "-_ "), name
    for spelling, name in [("Smooth Grad-CAM++", "smoothgradcam++"), ("SS-CAM", "sscam"),
                           ("IS-CAM", "iscam"), ("Ablation-CAM", "ablationcam"),
                           ("KPCA_CAM", "kpcacam"), ("Full-Grad", "fullgrad"),
                           ("EigenGradCAM", "eigengradcam"), ("Shapley CAM", "shapleycam")]:
        assert method_name(spelling) == name
    for name in ("cam", "ablationcam", "shapleycam", "fullgrad", "smoothgradcam++", "sscam",
                 "iscam"):
        assert METHODS[name].needs_model
    for name in ("eigengradcam", "gradcamelementwise", "kpcacam"):
        assert not METHODS[name].needs_model


# -- pure functions -----------------------------------------------------------------------------

def test_eigengradcam_and_elementwise_formulas():
    torch.manual_seed(0)
    a, g = torch.randn(3, 6, 4, 5), torch.randn(3, 6, 4, 5)
    close(methods_pure.eigengradcam(a, g), svd_projection(g * a), "eigengradcam")
    ref = torch.zeros(3, 4, 5, dtype=torch.float64)
    for c in range(6):
        ref += (g[:, c].double() * a[:, c].double()).clamp(min=0)
    close(methods_pure.gradcamelementwise(a, g), ref.clamp(min=0), "elementwise")


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf"])
def test_kpcacam_equals_scikit_learn_kernel_pca(kernel):
    from sklearn.decomposition import KernelPCA

    torch.manual_seed(1)
    a = torch.randn(2, 7, 5, 6)
    ours = methods_pure.kpcacam(a, kernel=kernel)
    for i in range(2):
        m = a[i].double().reshape(7, -1).t().numpy()
        m = m - m.mean(axis=0)
        proj = KernelPCA(n_components=1, kernel=kernel).fit_transform(m)[:, 0]
        ref = skewed(torch.from_numpy(proj)[None])[0].reshape(5, 6)
        close(ours[i], ref, f"kpca {kernel} image {i}")


def test_kpcacam_linear_kernel_is_eigencam_and_bad_kernel_is_refused():
    torch.manual_seed(2)
    a = torch.randn(2, 5, 4, 4)
    close(methods_pure.kpcacam(a, kernel="linear"), eigencam(a), "linear KPCA = EigenCAM")
    with pytest.raises(ValueError, match="rbf"):
        methods_pure.kpcacam(a, kernel="cosine")


def test_smoothgradcampp_weights_with_one_clean_sample_are_gradcampp():
    torch.manual_seed(3)
    a, g = torch.randn(2, 4, 3, 3).abs(), torch.randn(2, 4, 3, 3)
    w = methods_model.smoothgradcampp_weights(a, g, g.pow(2), g.pow(3))
    close(F.relu(torch.einsum("bc,bchw->bhw", w, a)), METHODS["gradcam++"].fn(a, g), "n=1")


def test_iscam_coefficients_and_ablation_forward_count():
    torch.testing.assert_close(methods_score.iscam_coefficients(4),
                               torch.tensor([0.25, 0.75, 1.5, 2.5]))
    assert methods_score.ablation_forwards(512, 128) == 5  # 513 copies
    assert methods_score.ablation_forwards(128, 129) == 1
    assert methods_score.ablation_forwards(128, 128) == 2


@pytest.mark.parametrize("method,weighted", [
    ("gradcam", lambda a, g: g.mean(dim=(2, 3), keepdim=True) * a),
    ("hirescam", lambda a, g: g * a),
    ("layercam", lambda a, g: g.clamp(min=0) * a),
    ("gradcamelementwise", lambda a, g: (g * a).clamp(min=0)),
    ("xgradcam", lambda a, g: ((g * a).sum(dim=(2, 3), keepdim=True)
                               / (a.sum(dim=(2, 3), keepdim=True) + 1e-7)) * a),
])
def test_eigen_smooth_projects_the_weighted_activations(method, weighted):
    torch.manual_seed(4)
    a, g = torch.randn(2, 6, 4, 4).abs(), torch.randn(2, 6, 4, 4)
    expected = svd_projection(weighted(a.double(), g.double()))
    close(METHODS[method].map(a, g, eigen_smooth=True), expected, method)
    gap = (METHODS[method].map(a, g) - expected.float()).abs().max()
    assert gap > 1e-3, "eigen_smooth changed nothing: the test would not see it"


def test_eigen_smooth_leaves_projection_methods_alone():
    torch.manual_seed(5)
    a, g = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4)
    for name in ("eigencam", "eigengradcam", "kpcacam"):
        torch.testing.assert_close(METHODS[name].map(a, g, eigen_smooth=True),
                                   METHODS[name].map(a, g))


# -- through compute: gradient and model-calling methods -----------------------------------------

def test_compute_eigen_smooth_gradcam(simple, no_leak):
    model, x = simple
    a, g, _ = reference_capture(model, x, "conv3", [1, 4])
    res = run(no_leak, model, x, "gradcam", "conv3", [1, 4], eigen_smooth=True)
    close(res.raw, svd_projection(g.mean(dim=(2, 3), keepdim=True) * a), "compute eigen_smooth")


def test_cam_is_the_fc_weights_and_z_times_gradcam(no_leak):
    model = gapnet()
    torch.manual_seed(6)
    x = torch.randn(2, 3, 16, 16)
    targets = [2, 4]
    res = run(no_leak, model, x, "cam", "features", targets)
    a, g, _ = reference_capture(model, x, "features", targets)
    w = model.fc.weight.detach().double()[targets]
    close(res.raw, torch.einsum("bc,bchw->bhw", w, a).clamp(min=0), "CAM formula")
    z = a.shape[2] * a.shape[3]  # on a pooling + Linear head, G = W_t / Z everywhere
    grad = run(no_leak, model, x, "gradcam", "features", targets)
    close(res.raw, grad.raw * z, "CAM = Z · Grad-CAM")


def test_cam_refuses_a_model_without_a_pooling_linear_head(simple, no_leak):
    model, x = simple
    with no_leak(model), pytest.raises(cam.CamError, match=r"fc1 \(2048 inputs\).*gradcam"):
        cam.compute(model, x, "cam", layer="conv3")
    smooth = gapnet(smooth=True)  # a Linear takes 12 inputs, but a Softplus lies in between
    with no_leak(smooth), pytest.raises(cam.CamError, match="global average pool"):
        cam.compute(smooth, torch.randn(1, 3, 16, 16), "cam", layer="features")


def test_ablationcam_against_the_written_out_head(simple, no_leak):
    """Channel ``k`` zeroed at conv3 (pre-ReLU, negative values: the paper's ablation by 0)."""
    model, x = simple
    targets = [3, 8]
    calls = []
    counter = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        res = run(no_leak, model, x, "ablationcam", "conv3", targets, batch_size=50)
    finally:
        counter.remove()
    # one capture forward + ⌈129 / 50⌉ = 3 replaced forwards per image
    assert len(calls) == 1 + 2 * methods_score.ablation_forwards(128, 50) == 7

    def head(t):
        return model.fc2(F.relu(model.fc1(model.pool(F.relu(t)).flatten(1))))

    a, _, logits = reference_capture(model, x, "conv3", targets)
    ref = torch.zeros(2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        for i, t in enumerate(targets):
            y = float(logits[i, t])
            for k in range(128):
                ak = a[i:i + 1].clone().float()
                ak[0, k] = 0
                yk = float(head(ak)[0, t])
                ref[i] += (y - yk) / y * a[i, k]
    close(res.raw, ref.clamp(min=0), "AblationCAM")


def test_shapleycam_gradient_and_hessian_vector_product(no_leak):
    model = gapnet(smooth=True)
    torch.manual_seed(7)
    x = torch.randn(2, 3, 16, 16)
    targets = [0, 3]
    res = run(no_leak, model, x, "shapleycam", "features", targets)
    with torch.no_grad():
        a = model.features(F.relu(model.conv1(x)))

    def score(t):
        out = model.head(t)
        return out[0, targets[0]] + out[1, targets[1]]

    g = torch.autograd.functional.jacobian(score, a)
    _, hvp = torch.autograd.functional.hvp(score, a, v=a)
    w = (g - 0.5 * hvp).double().mean(dim=(2, 3))
    ref = torch.einsum("bc,bchw->bhw", w, a.double()).clamp(min=0)
    close(res.raw, ref, "ShapleyCAM")
    grad_only = torch.einsum("bc,bchw->bhw", g.double().mean(dim=(2, 3)), a.double()).clamp(min=0)
    assert (ref - grad_only).abs().max() > 1e-3 * ref.abs().max(), "the HVP term was zero"


def test_shapleycam_is_gradcam_on_a_piecewise_linear_head(simple, no_leak):
    model, x = simple
    a = run(no_leak, model, x, "shapleycam", "conv3", [1, 2])
    b = run(no_leak, model, x, "gradcam", "conv3", [1, 2])
    close(a.raw, b.raw, "ReLU / max-pool head: HVP = 0")


def test_smoothgradcampp_noisy_derivatives(simple, no_leak, monkeypatch):
    model, x = simple
    monkeypatch.setattr(methods_model, "SMOOTH_SAMPLES", 3)
    monkeypatch.setattr(methods_model, "SEED", 11)
    targets = [5, 6]
    res = run(no_leak, model, x, "smoothgradcam++", "conv3", targets)
    gen = torch.Generator().manual_seed(11)
    a, _, _ = reference_capture(model, x, "conv3", targets)
    gs = []
    for _ in range(3):
        noise = torch.randn(x.shape, generator=gen) * methods_model.SMOOTH_STD
        gs.append(reference_capture(model, x + noise, "conv3", targets)[1])
    d1 = sum(gs) / 3
    d2 = sum(g ** 2 for g in gs) / 3
    d3 = sum(g ** 3 for g in gs) / 3
    alpha = d2 / (2 * d2 + a.sum(dim=(2, 3), keepdim=True) * d3 + 1e-7)
    w = (alpha * d1.clamp(min=0)).sum(dim=(2, 3))
    close(res.raw, torch.einsum("bc,bchw->bhw", w, a).clamp(min=0), "SmoothGrad-CAM++")
    again = run(no_leak, model, x, "smoothgradcam++", "conv3", targets)
    torch.testing.assert_close(again.raw, res.raw, rtol=0, atol=0)
    monkeypatch.setattr(methods_model, "SEED", 12)
    other = run(no_leak, model, x, "smoothgradcam++", "conv3", targets)
    assert (other.raw - res.raw).abs().max() > 1e-3 * res.raw.abs().max(), "the seed is unused"


def _psi(t: torch.Tensor, size) -> torch.Tensor:
    out = torch.zeros(t.shape[0], t.shape[1], *size, dtype=torch.float64)
    for i in range(t.shape[0]):
        for c in range(t.shape[1]):
            m = t[i, c].abs().double()
            m = (m - m.min()) / (m.max() - m.min() + 1e-7)
            out[i, c] = F.interpolate(m[None, None], size=size, mode="bilinear",
                                      align_corners=False)[0, 0]
    return out


@pytest.mark.parametrize("batchnorm", [False, True])
def test_fullgrad_input_and_bias_gradients(no_leak, batchnorm):
    model = gapnet(batchnorm=batchnorm)
    torch.manual_seed(8)
    x = torch.randn(2, 3, 16, 16)
    targets = [1, 2]
    res = run(no_leak, model, x, "fullgrad", "features", targets)
    names = ["bn1", "bn2"] if batchnorm else ["conv1", "features"]
    assert [n for n, _ in methods_model.bias_layers(model)] == names
    store = {}

    def keep(name):
        def hook(_m, _i, out):
            out.retain_grad()
            store[name] = out
        return hook

    handles = [model.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    z = x.clone().requires_grad_()
    try:
        logits = model(z)
        (logits[0, 1] + logits[1, 2]).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    total = _psi(z.grad * x, (16, 16)).sum(dim=1)
    for n in names:
        m = model.get_submodule(n)
        if batchnorm:
            bias = m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
        else:
            bias = m.bias
        total += _psi(bias.detach()[None, :, None, None] * store[n].grad, (16, 16)).sum(dim=1)
    close(res.raw, total, "FullGrad")
    assert res.raw.shape == (2, 16, 16)


def test_sscam_weights_recomputed(zoo_cnn, no_leak, monkeypatch):
    model, x = zoo_cnn
    x = x[:1]
    monkeypatch.setattr(methods_score, "SSCAM_SAMPLES", 2)
    monkeypatch.setattr(methods_score, "SEED", 5)
    res = run(no_leak, model, x, "sscam", "conv3", [7], batch_size=128)
    a, _, _ = reference_capture(model, x, "conv3", [7])
    masks = minmax(F.interpolate(a.float(), size=(32, 32), mode="bilinear",
                                 align_corners=False)[0])
    gen = torch.Generator().manual_seed(5)
    w = torch.zeros(128, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(2):
            noisy = masks + torch.randn(masks.shape, generator=gen) * methods_score.SSCAM_STD
            w += torch.softmax(model(x * noisy[:, None]), dim=1)[:, 7].double()
    close(res.raw, torch.einsum("c,bchw->bhw", w / 2, a).clamp(min=0), "SS-CAM")


def test_iscam_weights_recomputed(zoo_cnn, no_leak, monkeypatch):
    model, x = zoo_cnn
    x = x[1:]
    monkeypatch.setattr(methods_score, "ISCAM_SAMPLES", 3)
    res = run(no_leak, model, x, "iscam", "conv3", [2], batch_size=64)
    a, _, _ = reference_capture(model, x, "conv3", [2])
    masks = minmax(F.interpolate(a.float(), size=(32, 32), mode="bilinear",
                                 align_corners=False)[0])
    w = torch.zeros(128, dtype=torch.float64)
    with torch.no_grad():
        for coeff in (1 / 3, 1 / 3 + 2 / 3, 1 / 3 + 2 / 3 + 1):
            w += torch.softmax(model(x * coeff * masks[:, None]), dim=1)[:, 2].double()
    close(res.raw, torch.einsum("c,bchw->bhw", w / 3, a).clamp(min=0), "IS-CAM")


def test_model_calling_methods_honour_eigen_smooth(simple, no_leak):
    model, x = simple
    res = run(no_leak, model, x, "ablationcam", "conv3", [0, 1], eigen_smooth=True)
    plain = run(no_leak, model, x, "ablationcam", "conv3", [0, 1])
    a, _, _ = reference_capture(model, x, "conv3", [0, 1])
    w, _ = methods_score.ablation_weights(a.float(), torch.tensor([0, 1]),
                                          lambda i, acts: model.fc2(F.relu(model.fc1(
                                              model.pool(F.relu(acts)).flatten(1)))), 128)
    close(res.raw, svd_projection(w.double()[:, :, None, None] * a), "AblationCAM eigen_smooth")
    assert (res.raw - plain.raw).abs().max() > 1e-3 * plain.raw.abs().max()


# -- aug_smooth ---------------------------------------------------------------------------------

def test_aug_smooth_averages_the_unaugmented_maps(simple, no_leak):
    model, x = simple
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).indices
    with no_leak(model):
        res = cam.compute(model, x, "gradcam", layer="conv3", target="topk:2", aug_smooth=True)
    assert res.targets.tolist() == top2.reshape(-1).tolist()  # fixed by the clean input
    assert len(AUGMENTATIONS) == 6
    expected = torch.zeros(4, 32, 32)
    for aug in AUGMENTATIONS:
        z = x * aug.factor
        if aug.flip:
            z = z.flip(-1)
        for j in range(2):
            maps = cam.compute(model, z, "gradcam", layer="conv3", target=top2[:, j]).maps
            expected[j::2] += maps.flip(-1) if aug.flip else maps
    expected /= 6
    torch.testing.assert_close(res.raw, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.maps, minmax(expected), rtol=1e-5, atol=1e-6)
    plain = cam.compute(model, x, "gradcam", layer="conv3", target="topk:2")
    assert (plain.maps - res.maps).abs().max() > 1e-2, "aug_smooth changed nothing"


# -- no hook left behind after an exception -------------------------------------------------------

class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("method", ["ablationcam", "shapleycam", "smoothgradcam++", "fullgrad",
                                    "sscam", "cam"])
def test_no_hook_left_when_the_model_raises_midway(method, no_leak, monkeypatch):
    """The model raises on its second forward (after compute's own capture): inside the
    method's extra forwards, where its hooks (or the context's) are registered."""
    model = gapnet()
    monkeypatch.setattr(methods_score, "SSCAM_SAMPLES", 1)
    calls = {"n": 0}
    original = model.fc.forward

    def flaky(t):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise Boom("injected")
        return original(t)

    monkeypatch.setattr(model.fc, "forward", flaky)
    with no_leak(model), pytest.raises(Boom):
        cam.compute(model, torch.randn(1, 3, 16, 16), method, layer="features")
    assert calls["n"] == 2
    assert not any(p.grad is not None for p in model.parameters())


def test_forward_count_formula_matches_math():
    for c, bs in [(1, 1), (7, 3), (512, 32)]:
        assert methods_score.ablation_forwards(c, bs) == math.ceil((c + 1) / bs)


def test_project_is_eigencam_of_the_weighted_activations():
    torch.manual_seed(9)
    w = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(project(w), eigencam(w))
