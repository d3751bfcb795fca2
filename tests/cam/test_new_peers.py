"""The newer CAM methods (issue 14) against the peers, value by value; the oracle where they differ.

Peers (test-only dependencies): pytorch-grad-cam 1.5.7 (EigenGradCAM, GradCAMElementWise,
KPCA_CAM, AblationCAM, ShapleyCAM, FullGrad, ``eigen_smooth``, ``aug_smooth``) and torchcam 0.5
(CAM, SmoothGradCAMpp, SSCAM, ISCAM). Models: hooklab's SimpleCNN at ``conv3`` and torchvision
ResNet-18 at ``layer4`` (random weights, seeded; 2×3×32×32 and 2×3×64×64) as in
``tests/cam/test_cam_peers.py``, and :class:`tests.peer_cams.GapNet` (a pooling + Linear head,
optionally smooth or with batch norms) where a method needs one. Comparison: the raw map at the
layer's resolution after the method's ReLU (the peer's ``get_cam_image`` output, ReLU'd), with the
tolerance of ``test_cam_peers.py`` (``rtol = 1e-4``, ``atol = 1e-4 × max``).

Alignments (each one explicit): the sign of a principal component (EigenGradCAM, KPCA-CAM,
``eigen_smooth``) is hooklab's positive-skew rule applied to the peer's projection, which keeps
the SVD's arbitrary sign; Score-CAM-family weights are compared as ``log`` of the peer's
softmax-over-channels weights (with the target ``p_t`` the peer's weights are
``softmax_k(mean p_t(M_k) - p_t(X))``, so their log is hooklab's weight up to a constant per image).

Where the peer is off, the oracle decides (and the test says how far off the peer is):

* pytorch-grad-cam's AblationCAM "ablates" a layer with negative values with ``min - 1e7``
  instead of 0 (the paper zeroes the channel). Where a ReLU follows (SimpleCNN's ``conv3``) or
  the layer is post-ReLU (ResNet's ``layer4``) that makes no difference and the two agree; where
  the layer feeds the pooling directly (GapNet's ``features``) the peer is off.
* torchcam's SmoothGradCAMpp deviates from Omeiza et al. in three ways: the weights multiply
  ``ReLU`` of the *last* noisy sample's gradient (not the averaged one), ``α``'s denominator uses
  ``Σ_ab A_ab D₃(a, b)`` (one number per channel) instead of ``(Σ_ab A_ab) D₃(i, j)``, and the map
  weights the last noisy sample's activation instead of the clean one.
"""

from __future__ import annotations

import pytest
import pytorch_grad_cam as pgc_lib
import torch
import torch.nn.functional as F
import torchcam.methods as tc_lib

from hooklab.cam import engine as cam
from hooklab.cam import methods_model, methods_pure, methods_score
from hooklab.cam.methods import minmax
from hooklab.models.zoo import get_model
from tests.conftest import total_hooks
from tests.peer_cams import (
    PEER_CASES,
    Prob,
    gapnet,
    oracle,
    peer_case,
    pgc,
    pgc_fullgrad,
    pgc_maps,
    torchcam_raw,
)

RTOL = 1e-4
REL_ATOL = 1e-4

@pytest.fixture(scope="module", params=list(PEER_CASES))
def case(request):
    """(name, model, layer, input, per-image targets [top-1 of image 0, top-2 of image 1])."""
    return (request.param, *peer_case(request.param))


@pytest.fixture
def ours(no_leak):
    def run(model, x, method, layer, targets, **kw):
        assert total_hooks(model) == 0, "a peer left a hook on the model"
        with no_leak(model):
            res = cam.compute(model, x, method, layer=layer, target=list(targets), **kw)
        assert res.targets.tolist() == list(targets)
        return res
    return run


def close(actual, expected, what):
    scale = float(expected.abs().max())
    assert scale > 0, f"{what}: the reference map is all zeros"
    torch.testing.assert_close(actual.float(), expected.float(), rtol=RTOL,
                               atol=REL_ATOL * scale, msg=what)


def by_max(maps):
    return maps / maps.amax(dim=(-2, -1), keepdim=True)


def skew(pre):
    """hooklab's sign rule (positive skew) on the peer's ``(B, h, w)`` projection, then ReLU."""
    s = torch.where(pre.double().flatten(1).pow(3).sum(1) < 0, -1.0, 1.0).float()
    return F.relu(pre * s[:, None, None])


# -- pytorch-grad-cam: pure methods ---------------------------------------------------------------

@pytest.mark.parametrize("method,cls,signed", [
    ("eigengradcam", pgc_lib.EigenGradCAM, True),
    ("gradcamelementwise", pgc_lib.GradCAMElementWise, False),
])
def test_pytorch_grad_cam_pure_methods_agree(case, method, cls, signed, ours):
    name, model, layer, x, targets = case
    res = ours(model, x, method, layer, targets)
    pre, final = pgc(cls, model, model.get_submodule(layer), x, targets)
    close(res.raw, skew(pre) if signed else F.relu(pre), f"{name} {method}")
    if not signed:
        torch.testing.assert_close(final, res.maps, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf"])
def test_pytorch_grad_cam_kpca_agrees(case, kernel, ours, monkeypatch):
    """pytorch-grad-cam's KPCA_CAM default kernel is ``"sigmoid"`` (hooklab's default too)."""
    name, model, layer, x, targets = case
    monkeypatch.setattr(methods_pure, "KPCA_KERNEL", kernel)
    res = ours(model, x, "kpcacam", layer, targets)
    pre, _ = pgc(pgc_lib.KPCA_CAM, model, model.get_submodule(layer), x, targets, kernel=kernel)
    close(res.raw, skew(pre), f"{name} kpca {kernel}")


# -- pytorch-grad-cam: eigen_smooth and aug_smooth ------------------------------------------------

@pytest.mark.parametrize("method,cls", [("gradcam", pgc_lib.GradCAM),
                                        ("layercam", pgc_lib.LayerCAM),
                                        ("hirescam", pgc_lib.HiResCAM),
                                        ("xgradcam", pgc_lib.XGradCAM),
                                        ("gradcamelementwise", pgc_lib.GradCAMElementWise)])
def test_pytorch_grad_cam_eigen_smooth_agrees(case, method, cls, ours):
    name, model, layer, x, targets = case
    res = ours(model, x, method, layer, targets, eigen_smooth=True)
    pre, _ = pgc(cls, model, model.get_submodule(layer), x, targets, eigen_smooth=True)
    close(res.raw, skew(pre), f"{name} {method} eigen_smooth")


@pytest.mark.parametrize("method,cls", [("gradcam", pgc_lib.GradCAM),
                                        ("layercam", pgc_lib.LayerCAM)])
def test_pytorch_grad_cam_aug_smooth_agrees(method, cls, ours):
    """The peer averages its six min-max normalised maps and stops; hooklab normalises the
    average once more (maps in [0, 1]), so the peer's average is compared normalised.
    (SimpleCNN only: twelve passes of ResNet-18 add nothing the flip/scale logic needs.)"""
    name, layer = "simple_cnn", "conv3"
    model = get_model(name, seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    targets = [2, 7]
    res = ours(model, x, method, layer, targets, aug_smooth=True)
    peer = pgc_maps(cls, model, [model.get_submodule(layer)], x, targets, aug_smooth=True)
    torch.testing.assert_close(res.maps, minmax(peer), rtol=0, atol=2e-4,
                               msg=f"{name} {method} aug_smooth")
    plain = ours(model, x, method, layer, targets)
    assert (plain.maps - res.maps).abs().max() > 1e-2, "aug_smooth changed nothing"


# -- pytorch-grad-cam: model-calling methods ------------------------------------------------------

@pytest.mark.slow
def test_pytorch_grad_cam_ablationcam_agrees_resnet18(ours):
    model = get_model("resnet18", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)  # 512 ablated copies
    targets = [3]
    res = ours(model, x, "ablationcam", "layer4", targets)
    pre, _ = pgc(pgc_lib.AblationCAM, model, model.layer4, x, targets, batch_size=128)
    close(res.raw, F.relu(pre), "resnet18 ablationcam (post-ReLU layer: the peer zeroes)")


def test_pytorch_grad_cam_ablationcam_agrees_when_a_relu_follows(ours):
    """SimpleCNN's conv3 has negative values, so the peer ablates with ``min - 1e7``, not 0;
    the ReLU right after conv3 maps both to 0, so the two agree here."""
    model = get_model("simple_cnn", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    targets = [2, 7]
    res = ours(model, x, "ablationcam", "conv3", targets)
    pre, _ = pgc(pgc_lib.AblationCAM, model, model.conv3, x, targets, batch_size=128)
    close(res.raw, F.relu(pre), "simple_cnn ablationcam")


def test_pytorch_grad_cam_ablationcam_is_off_without_a_relu(ours):
    """GapNet's ``features`` (negative values) goes straight into the average pool: the peer's
    ``min - 1e7`` ablation is not the paper's zeroed channel. The oracle (the head written out,
    channel ``k`` set to 0) sides with hooklab."""
    model = gapnet()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    targets = [1, 3]
    res = ours(model, x, "ablationcam", "features", targets)
    with torch.no_grad():
        a = model.features(F.relu(model.conv1(x)))
        ref = torch.zeros(2, 8, 8)
        for i, t in enumerate(targets):
            y = model.head(a[i:i + 1])[0, t]
            for k in range(a.shape[1]):
                ak = a[i:i + 1].clone()
                ak[0, k] = 0
                ref[i] += (y - model.head(ak)[0, t]) / y * a[i, k]
    close(res.raw, F.relu(ref), "gapnet ablationcam vs oracle")
    pre, _ = pgc(pgc_lib.AblationCAM, model, model.features, x, targets, batch_size=32)
    gap = float((F.relu(pre) - F.relu(ref)).abs().max() / F.relu(ref).abs().max())
    assert gap > 0.05, f"the peer now ablates with 0 (gap {gap:.3f}): compare it directly"


def test_pytorch_grad_cam_shapleycam_agrees_on_a_smooth_head(ours):
    model = gapnet(smooth=True)
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    targets = [1, 4]
    res = ours(model, x, "shapleycam", "features", targets)
    pre, _ = pgc(pgc_lib.ShapleyCAM, model, model.features, x, targets)
    close(res.raw, F.relu(pre), "gapnet shapleycam")
    grad = ours(model, x, "gradcam", "features", targets)
    assert float((by_max(grad.raw) - by_max(res.raw)).abs().max()) > 1e-3, "HVP term is 0"


def test_pytorch_grad_cam_shapleycam_agrees(case, ours):
    name, model, layer, x, targets = case
    res = ours(model, x, "shapleycam", layer, targets)
    pre, _ = pgc(pgc_lib.ShapleyCAM, model, model.get_submodule(layer), x, targets)
    close(res.raw, F.relu(pre), f"{name} shapleycam")


@pytest.mark.parametrize("which", ["simple_cnn", "resnet18", "gapnet_bn"])
def test_pytorch_grad_cam_fullgrad_agrees(which, ours):
    if which == "gapnet_bn":
        model, layer, shape = gapnet(batchnorm=True), "features", (2, 3, 16, 16)
    else:
        layer, shape = PEER_CASES[which]
        model = get_model(which, seed=0).eval()
    torch.manual_seed(3)
    x = torch.randn(*shape)
    targets = [0, 1]
    res = ours(model, x, "fullgrad", layer, targets)
    summed, final = pgc_fullgrad(model, x, targets)
    close(res.raw, summed, f"{which} fullgrad (sum of the parts)")
    torch.testing.assert_close(res.maps, final, rtol=0, atol=1e-4, msg=f"{which} final")


# -- torchcam -------------------------------------------------------------------------------------

def test_torchcam_cam_agrees_resnet18(ours):
    model = get_model("resnet18", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    targets = [3, 9]
    res = ours(model, x, "cam", "layer4", targets)
    peer = torchcam_raw(tc_lib.CAM, model, "layer4", x, targets)  # no ReLU in torchcam's CAM
    assert float(peer.min()) < 0, "the peer's map is ReLU'd now: drop the ReLU below"
    close(res.raw, F.relu(peer), "resnet18 CAM")


def test_torchcam_smoothgradcampp_is_off_the_paper_and_hooklab_is_not(ours, monkeypatch):
    model = get_model("simple_cnn", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    targets = [2, 7]
    n, std, seed = 3, 0.3, 4
    monkeypatch.setattr(methods_model, "SMOOTH_SAMPLES", n)
    monkeypatch.setattr(methods_model, "SMOOTH_STD", std)
    monkeypatch.setattr(methods_model, "SEED", seed)
    res = ours(model, x, "smoothgradcam++", "conv3", targets)

    torch.manual_seed(seed)  # torchcam draws its noise from the global generator
    with tc_lib.SmoothGradCAMpp(model, "conv3", num_samples=n, std=std,
                                input_shape=(3, 32, 32)) as extractor:
        scores = model(x)
        peer = extractor(targets, scores, normalized=False)[0].detach()

    gen = torch.Generator().manual_seed(seed)
    a, _, _ = oracle(model, "conv3", x, targets)
    acts, grads = [], []
    for _ in range(n):
        an, gn, _ = oracle(model, "conv3", x + torch.randn(x.shape, generator=gen) * std, targets)
        acts.append(an.double())
        grads.append(gn.double())
    a = a.double()
    d1 = sum(grads) / n
    d2 = sum(g ** 2 for g in grads) / n
    d3 = sum(g ** 3 for g in grads) / n
    alpha = d2 / (2 * d2 + a.sum(dim=(2, 3), keepdim=True) * d3 + 1e-7)
    paper = F.relu(torch.einsum("bc,bchw->bhw", (alpha * F.relu(d1)).sum(dim=(2, 3)), a))
    close(res.raw, paper, "hooklab = Omeiza et al.")

    alpha_tc = d2 / (2 * d2 + (d3 * a).sum(dim=(2, 3), keepdim=True) + 1e-8)
    w_tc = (alpha_tc * F.relu(grads[-1])).sum(dim=(2, 3))
    quirks = F.relu(torch.einsum("bc,bchw->bhw", w_tc, acts[-1]))
    close(peer, quirks, "torchcam = last gradient, per-channel Σ A·D3, last activation")
    gap = float((by_max(peer) - by_max(paper)).abs().max())
    assert gap > 0.05, f"torchcam's SmoothGradCAMpp now follows the paper (gap {gap:.3f})"


class _UpThenNorm:
    """Mixin: torchcam's Score-CAM-family masks min-max normalised after upsampling (hooklab's
    order; torchcam normalises at the layer's resolution first)."""

    def _upsample(self, activation):
        return minmax(super()._upsample(activation))  # type: ignore[misc]


class SSCAMUpThenNorm(_UpThenNorm, tc_lib.SSCAM):
    pass


class ISCAMUpThenNorm(_UpThenNorm, tc_lib.ISCAM):
    pass


def _torchcam_weights(cls, model, layer, x, targets, **kwargs):
    """The peer's ``(B, C)`` weights (softmax over channels) for the target ``p_t``."""
    captured = []
    with cls(model, layer, input_shape=tuple(x.shape[1:]), **kwargs) as extractor:
        original = extractor._get_weights

        def keep(*args, **kw):
            out = original(*args, **kw)
            captured.append(out[0].detach().clone())
            return out

        extractor._get_weights = keep
        with torch.no_grad():
            model(x)
        extractor(targets=[Prob(int(t)) for t in targets], normalized=False)
    return captured[0]


def centred(w):
    return w - w.mean(dim=1, keepdim=True)


@pytest.mark.parametrize("method", ["sscam", "iscam"])
def test_torchcam_smoothed_and_integrated_scorecam_weights_agree(method):
    model = get_model("simple_cnn", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 32, 32)
    targets = [7]
    a, _, _ = oracle(model, "conv3", x, targets)
    t = torch.tensor(targets)

    def score(z):
        with torch.no_grad():
            return model(z)

    if method == "sscam":
        torch.manual_seed(6)
        peer = _torchcam_weights(SSCAMUpThenNorm, model, "conv3", x, targets, batch_size=128,
                                 num_samples=3, std=2.0)
        ours_w = methods_score.sscam_weights(a, x, t, score, batch_size=128, num_samples=3,
                                             std=2.0, seed=6)
    else:
        peer = _torchcam_weights(ISCAMUpThenNorm, model, "conv3", x, targets, batch_size=64,
                                 num_samples=4)
        ours_w = methods_score.iscam_weights(a, x, t, score, batch_size=64, num_samples=4)
    torch.testing.assert_close(centred(ours_w.double()), centred(peer.double().log()),
                               rtol=0, atol=1e-5, msg=method)
    assert float(ours_w.std()) > 1e-4, "the weights are all equal: the comparison is empty"
