"""hooklab's CAM methods against the peer libraries, value by value; an oracle where they differ.

Peers (test-only dependencies, ``requirements-dev.txt``): pytorch-grad-cam 1.5 (all seven
methods), torchcam 0.5 (Grad-CAM, XGrad-CAM, LayerCAM, Score-CAM; its Grad-CAM++ is off the
formula, see below), Captum (``LayerGradCam``). Models: hooklab's SimpleCNN at ``conv3``
(``get_model("simple_cnn", seed=0)``, 2×3×32×32) and torchvision ResNet-18 at ``layer4``
(random weights, seed 0, 2×3×64×64); per-image targets ``[top-1 of image 0, top-2 of image 1]``
so a peer that ignored the targets would show.

What is compared: the raw map at the layer's resolution after the method's ReLU, before
resizing and normalisation (hooklab's ``CamResult.raw``; the peer's own map at the same stage),
and for pytorch-grad-cam also its final upsampled maps against hooklab's ``maps``.

Tolerance: ``rtol = 1e-4`` and ``atol = 1e-4 × max|map|`` (maps in [0, 1]: ``atol = 1e-4``).
Both sides are float32 sums over ≤ 512 channels and ≤ 64 positions taken in different orders
(numpy vs torch; another CPU's SIMD width changes the order again); the measured gap is
≤ 2e-6 of the map's maximum, and the smallest convention difference these tests detect is
3e-3 (Grad-CAM++'s ε), so 1e-4 separates rounding from a different definition with margin on
both sides. Score-CAM on ResNet-18 (512 masked forwards) runs on one 48×48 image, marked slow.

Conventions are aligned explicitly, never by a looser tolerance (``test_each_alignment_matters``
shows that each one is needed):

* Grad-CAM++: the ε in ``α``'s denominator is 1e-7 in hooklab and 1e-6 in pytorch-grad-cam; with
  random weights ``G²`` is of the order of ε, so the test sets hooklab's ε to the peer's.
* EigenCAM: pytorch-grad-cam keeps the SVD's arbitrary sign and then applies a ReLU; the test
  applies hooklab's sign rule (positive skew of the projection) to the peer's pre-ReLU
  projection. Its final maps keep the arbitrary sign, so they are not compared.
* Score-CAM: hooklab weights channel ``k`` by ``p_t(X ⊙ H_k)`` (the target's class-softmax
  probability); both peers take a softmax *over channels* of a per-channel score, so the peers
  get the target ``log p_t`` and give ``p_t(X ⊙ H_k) / Σ_j p_t(X ⊙ H_j)``: the same map up to a
  positive factor per image, so maps are compared divided by their maximum. pytorch-grad-cam
  upsamples the masks with ``align_corners=True`` (``nn.UpsamplingBilinear2d``); the test swaps
  in ``align_corners=False`` (hooklab's) for the call. torchcam min-max normalises each channel
  *before* upsampling, hooklab (and the paper, ``s(Up(A))``) after; the test's subclass
  re-normalises torchcam's upsampled masks, which equals normalising after upsampling.

Where a peer and the plain-autograd oracle (:func:`tests.peer_cams.oracle`: the model's forward
written out, the layer output as a fresh leaf, ``torch.autograd.grad``) disagree, the oracle
decides: pytorch-grad-cam's and torchcam's Grad-CAM at DenseNet-121 ``features.norm5`` (an
in-place ReLU follows it) and torchcam's Grad-CAM++ (its ``α`` is never divided) are off.
"""

from __future__ import annotations

import pytest
import pytorch_grad_cam as pgc_lib
import torch
import torch.nn.functional as F
import torchcam.methods as tc_lib
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from hooklab.cam import engine as cam
from hooklab.cam import methods as cam_methods
from hooklab.cam.methods import minmax
from hooklab.models.zoo import get_model
from tests.conftest import total_hooks
from tests.peer_cams import (
    PEER_CASES,
    LogProb,
    captum_gradcam,
    oracle,
    peer_case,
    pgc,
    torchcam_raw,
    torchcam_scorecam,
)

RTOL = 1e-4
REL_ATOL = 1e-4  # times the map's maximum
PGC_EPS_GRADCAMPP = 1e-6  # pytorch_grad_cam/grad_cam_plusplus.py: `eps = 0.000001`

PGC = {
    "gradcam": pgc_lib.GradCAM,
    "gradcam++": pgc_lib.GradCAMPlusPlus,
    "xgradcam": pgc_lib.XGradCAM,
    "hirescam": pgc_lib.HiResCAM,
    "layercam": pgc_lib.LayerCAM,
    "scorecam": pgc_lib.ScoreCAM,
    "eigencam": pgc_lib.EigenCAM,
}
TORCHCAM = {"gradcam": tc_lib.GradCAM, "xgradcam": tc_lib.XGradCAM, "layercam": tc_lib.LayerCAM}
GRADIENT_METHODS = [m for m in PGC if m not in ("scorecam", "eigencam")]


class TorchcamScoreCAMUpThenNorm(tc_lib.ScoreCAM):
    """torchcam's Score-CAM with each mask min-max normalised after upsampling (hooklab's order).

    torchcam normalises at the layer's resolution, then upsamples; bilinear upsampling is affine,
    so re-normalising the upsampled mask equals normalising the upsampled activation.
    """

    def _upsample(self, activation: torch.Tensor) -> torch.Tensor:
        return minmax(super()._upsample(activation))


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=list(PEER_CASES))
def case(request):
    """(name, model, layer name, input, per-image targets); seeded random weights, eval mode."""
    return (request.param, *peer_case(request.param))


@pytest.fixture
def ours(no_leak):
    """``ours(model, x, method, layer, targets)``: hooklab's result, checking the hooks.

    The model must have no hook before the call (a peer left none behind) and has exactly the
    hooks, flags and modes it had afterwards.
    """

    def run(model, x, method, layer, targets):
        assert total_hooks(model) == 0, "a peer left a hook on the model"
        with no_leak(model):
            res = cam.compute(model, x, method, layer=layer, target=targets)
        assert res.targets.tolist() == list(targets)
        return res

    return run


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """``actual ≈ expected`` within the file's tolerance, relative to ``expected``'s maximum."""
    scale = float(expected.abs().max())
    assert scale > 0, f"{what}: the reference map is all zeros, the comparison would be empty"
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=REL_ATOL * scale, msg=what)


def by_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its maximum (Score-CAM maps agree up to a positive factor)."""
    return maps / maps.amax(dim=(-2, -1), keepdim=True)


def skew_sign(proj: torch.Tensor) -> torch.Tensor:
    """hooklab's EigenCAM sign rule on ``(B, h, w)`` projections: ``-1`` where ``Σ p³ < 0``."""
    return torch.where(proj.double().flatten(1).pow(3).sum(1) < 0, -1.0, 1.0).float()[:, None, None]


def test_the_peer_tables_cover_every_method():
    assert set(PGC) <= set(cam.METHODS)  # the newer methods: tests/cam/test_new_peers.py


# -- pytorch-grad-cam ------------------------------------------------------------------------

@pytest.mark.parametrize("method", [m for m in PGC if m != "scorecam"])
def test_pytorch_grad_cam_agrees(case, method, ours, monkeypatch):
    name, model, layer, x, targets = case
    if method == "gradcam++":
        monkeypatch.setattr(cam_methods, "_EPS", PGC_EPS_GRADCAMPP)
    res = ours(model, x, method, layer, targets)
    pre, final = pgc(PGC[method], model, model.get_submodule(layer), x, targets)
    if method == "eigencam":
        peer = F.relu(pre * skew_sign(pre))
    else:
        peer = F.relu(pre)
        torch.testing.assert_close(final, res.maps, rtol=0, atol=1e-4,
                                   msg=f"{name} {method}: final maps")
    close(peer, res.raw, f"{name} {method}: raw maps")


def _pgc_scorecam(model, layer, x, targets, monkeypatch, target_type=LogProb,
                  align_upsampling=True):
    """pytorch-grad-cam's Score-CAM, aligned: ``log p_t`` target, masks upsampled with
    ``align_corners=False`` (each alignment can be switched off to show that it matters)."""
    def upsample_like_hooklab(size):
        return torch.nn.Upsample(size=size, mode="bilinear", align_corners=False)

    with monkeypatch.context() as mp:
        if align_upsampling:
            mp.setattr(torch.nn, "UpsamplingBilinear2d", upsample_like_hooklab)
        pre, _ = pgc(pgc_lib.ScoreCAM, model, model.get_submodule(layer), x, targets,
                     target_type=target_type, batch_size=128)
    return F.relu(pre)


def test_pytorch_grad_cam_scorecam_agrees_simple_cnn(ours, monkeypatch):
    model = get_model("simple_cnn", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    targets = [2, 7]
    res = ours(model, x, "scorecam", "conv3", targets)
    close(by_max(_pgc_scorecam(model, "conv3", x, targets, monkeypatch)), by_max(res.raw),
          "simple_cnn scorecam")


@pytest.mark.slow
def test_pytorch_grad_cam_scorecam_agrees_resnet18(ours, monkeypatch):
    model = get_model("resnet18", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 48, 48)  # layer4: 2×2; 512 masked forwards
    targets = [5]
    res = ours(model, x, "scorecam", "layer4", targets)
    close(by_max(_pgc_scorecam(model, "layer4", x, targets, monkeypatch)), by_max(res.raw),
          "resnet18 scorecam")


# -- torchcam --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(TORCHCAM))
def test_torchcam_agrees(case, method, ours):
    name, model, layer, x, targets = case
    res = ours(model, x, method, layer, targets)
    close(torchcam_raw(TORCHCAM[method], model, layer, x, targets), res.raw, f"{name} {method}")


def test_torchcam_scorecam_agrees_simple_cnn(ours):
    model = get_model("simple_cnn", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    targets = [2, 7]
    res = ours(model, x, "scorecam", "conv3", targets)
    peer = torchcam_scorecam(TorchcamScoreCAMUpThenNorm, model, "conv3", x, targets)
    close(by_max(peer), by_max(res.raw), "simple_cnn scorecam")


def test_torchcam_gradcampp_is_off_the_formula_and_hooklab_is_not(ours):
    """torchcam 0.5's GradCAMpp never divides α (``alpha[idx][mask].div_`` acts on a copy), so
    its weights are ``Σ_ij ReLU(G)³``. The oracle (the formula on autograd's A and G, with
    hooklab's ε = 1e-7) sides with hooklab and pytorch-grad-cam.
    """
    model = get_model("simple_cnn", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    targets = [2, 7]
    a, g, logits = oracle(model, "conv3", x, targets)
    torch.testing.assert_close(logits, model(x).detach(), rtol=1e-5, atol=1e-5)
    g2, g3 = g.double().pow(2), g.double().pow(3)
    alpha = g2 / (2 * g2 + a.double().sum(dim=(2, 3), keepdim=True) * g3 + 1e-7)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    w = (alpha * F.relu(g.double())).sum(dim=(2, 3))
    formula = F.relu(torch.einsum("bc,bchw->bhw", w, a.double())).float()
    undivided = F.relu(torch.einsum("bc,bchw->bhw", F.relu(g).pow(3).sum(dim=(2, 3)), a))

    res = ours(model, x, "gradcam++", "conv3", targets)
    close(res.raw, formula, "hooklab gradcam++ vs the formula")
    peer = torchcam_raw(tc_lib.GradCAMpp, model, "conv3", x, targets)
    close(peer, undivided, "torchcam gradcam++ is the undivided-alpha map")
    raw_gap = float((peer - formula).abs().max() / formula.abs().max())
    shape_gap = float((by_max(peer) - by_max(formula)).abs().max())
    assert raw_gap > 0.5 and shape_gap > 0.01, (
        f"torchcam's Grad-CAM++ now matches the formula (gaps {raw_gap:.2e}, {shape_gap:.2e}): "
        "compare it like the other torchcam methods")


# -- Captum ----------------------------------------------------------------------------------

def test_captum_layergradcam_agrees(case, ours):
    name, model, layer, x, targets = case
    res = ours(model, x, "gradcam", layer, targets)
    close(captum_gradcam(model, model.get_submodule(layer), x, targets), res.raw,
          f"{name} gradcam")


# -- the alignments are needed ----------------------------------------------------------------

def test_each_alignment_matters(ours, monkeypatch):
    """Without each convention alignment above, the peer's map is measurably different.

    So the agreement tests compare definitions, not two maps that would agree anyway.
    """
    model = get_model("simple_cnn", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    targets = [2, 7]

    def gap(a, b):
        return float((by_max(a) - by_max(b)).abs().max())

    res = ours(model, x, "gradcam++", "conv3", targets)  # hooklab's own ε = 1e-7
    pre, _ = pgc(pgc_lib.GradCAMPlusPlus, model, model.get_submodule("conv3"), x, targets)
    assert gap(F.relu(pre), res.raw) > 1e-3, "Grad-CAM++ ε"

    res = ours(model, x, "scorecam", "conv3", targets)
    peer = _pgc_scorecam(model, "conv3", x, targets, monkeypatch, align_upsampling=False)
    assert gap(peer, res.raw) > 1e-3, "pytorch-grad-cam Score-CAM: align_corners=True"
    peer = _pgc_scorecam(model, "conv3", x, targets, monkeypatch,
                         target_type=ClassifierOutputTarget)
    assert gap(peer, res.raw) > 1e-3, "pytorch-grad-cam Score-CAM: logit target"
    peer = torchcam_scorecam(tc_lib.ScoreCAM, model, "conv3", x, targets)
    assert gap(peer, res.raw) > 1e-3, "torchcam Score-CAM: normalise before upsampling"


# -- DenseNet-121: an in-place ReLU after the target layer -------------------------------------

@pytest.mark.slow
def test_densenet_norm5_oracle_decides(ours):
    """torchvision's DenseNet does ``F.relu(features, inplace=True)`` right after ``norm5``.

    Oracle: Grad-CAM from ``A`` = norm5's output as a fresh leaf and ``G = dS/dA``.
    hooklab and Captum (whose hook hands the network a clone) match it. pytorch-grad-cam keeps
    ``A`` as the layer output itself, which the in-place ReLU then overwrites, while its tensor
    hook still gets ``dS/dA``: it computes ``ReLU(Σ_c mean(G_c) ReLU(A_c))``. torchcam keeps the
    same aliased ``A`` and differentiates with respect to the overwritten tensor, so it computes
    Grad-CAM one step later, at the ReLU's output.
    """
    model = get_model("densenet121", seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 128, 128)  # norm5: 4×4
    with torch.no_grad():
        targets = [int(model(x).argmax(1))]
    layer = "features.norm5"
    a, g, logits = oracle(model, layer, x, targets)
    torch.testing.assert_close(logits, model(x).detach(), rtol=1e-5, atol=1e-5)
    definition = cam_methods.gradcam(a, g)

    close(ours(model, x, "gradcam", layer, targets).raw, definition, "hooklab vs oracle")
    close(captum_gradcam(model, model.get_submodule(layer), x, targets), definition,
          "captum vs oracle")

    pre, _ = pgc(pgc_lib.GradCAM, model, model.get_submodule(layer), x, targets)
    peer = F.relu(pre)
    off = float((by_max(peer) - by_max(definition)).abs().max())
    assert off > 0.02, f"pytorch-grad-cam now matches the definition at norm5 (gap {off:.3f})"
    close(peer, cam_methods.gradcam(F.relu(a), g), "pytorch-grad-cam: ReLU'd A, norm5's G")

    tc = torchcam_raw(tc_lib.GradCAM, model, layer, x, targets)
    off = float((by_max(tc) - by_max(definition)).abs().max())
    assert off > 0.02, f"torchcam now matches the definition at norm5 (gap {off:.3f})"
    a_relu, g_relu, _ = oracle(model, "relu(features.norm5)", x, targets)
    close(tc, cam_methods.gradcam(a_relu, g_relu), "torchcam: Grad-CAM at the ReLU output")
