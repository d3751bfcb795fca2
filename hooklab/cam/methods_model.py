"""CAM methods that need the model itself: CAM, ShapleyCAM, SmoothGrad-CAM++, FullGrad.

Each gets a :class:`~hooklab.cam.context.CamContext` from :func:`hooklab.cam.engine.compute`
(model frozen and in eval mode) and returns the raw map ``(B, h, w)`` after the final ReLU
(FullGrad: ``(B, H, W)`` at the input's resolution; it has no target layer).

================ =================================================================================
cam              ``L = ReLU(Σ_c W_tc A_c)`` with ``W`` the weight of the ``nn.Linear`` that follows
                 the layer's global average pooling (Zhou et al., CVPR 2016). Checked: the
                 model's logits must equal ``W · mean_ij(A) + b`` (one forward).
shapleycam       ``w_c = mean_ij(G - ½ H A)_cij`` with ``H A = ∂(G·A)/∂A`` the Hessian-vector
                 product of the target logit; ``L = ReLU(Σ_c w_c A_c)`` (Cai et al. 2025, "CAMs
                 as Shapley value-based explainers"; pytorch-grad-cam 1.5.7's ShapleyCAM). On a
                 network that is piecewise linear above the layer (ReLU, max-pool), ``H A = 0``
                 and ShapleyCAM is Grad-CAM.
smoothgradcam++  Grad-CAM++ with the derivatives averaged over ``n`` noisy inputs
                 ``x + δ_m``, ``δ ~ N(0, σ²)`` (seeded): ``D_p = (1/n) Σ_m G_m^p``,
                 ``α = D₂ / (2 D₂ + (Σ_ab A_ab) D₃ + ε)``, ``w_c = Σ_ij α ReLU(D₁)``,
                 ``L = ReLU(Σ_c w_c A_c)`` with ``A`` the clean activation (Omeiza et al. 2019;
                 n = 4, σ = 0.3 in input units as torchcam's SmoothGradCAMpp).
fullgrad         ``S = ψ(∇ₓS ⊙ x) + Σ_l Σ_c ψ(b_lc ∇_{z_l}S_c)``, ``ψ`` = abs, min-max per channel,
                 bilinear resize to the input; ``z_l`` the output of every ``Conv2d`` /
                 ``BatchNorm2d`` with a bias, ``b`` its (for batch norm: effective,
                 ``β - μ γ / √(σ² + ε)``) bias (Srinivas & Fleuret, NeurIPS 2019, as
                 pytorch-grad-cam 1.5.7 computes it).
================ =================================================================================

Example:
    >>> res = hooklab.cam.compute(resnet, x, "cam", layer="layer4")
    >>> res = hooklab.cam.compute(model, x, "fullgrad")          # the layer is ignored
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hooklab.cam.context import CamContext
from hooklab.cam.engine import CamError, _logits
from hooklab.cam.methods import (
    _EPS,
    CamMethod,
    project,
    reduce_weights,
    register,
)
from hooklab.recording.scoped import HookScope

log = logging.getLogger(__name__)

__all__ = ["bias_layers", "cam", "cam_weights", "effective_bias", "fc_layer", "fullgrad",
           "fullgrad_maps", "shapleycam", "shapleycam_weights", "smoothgradcampp",
           "smoothgradcampp_weights", "SEED", "SMOOTH_SAMPLES", "SMOOTH_STD"]

#: seed of SmoothGrad-CAM++'s input noise.
SEED = 0
#: SmoothGrad-CAM++'s noisy samples and noise standard deviation (torchcam's defaults).
SMOOTH_SAMPLES = 4
SMOOTH_STD = 0.3


# -- CAM ----------------------------------------------------------------------------------------

def fc_layer(model: nn.Module, channels: int) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` whose ``in_features`` equals ``channels``: CAM's classifier.

    Raises:
        CamError: there is none; the message names the model's Linear layers and what works.
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    fits = [(n, m) for n, m in linears if m.in_features == channels]
    if fits:
        return fits[-1]
    have = ", ".join(f"{n} ({m.in_features} inputs)" for n, m in linears) or "none"
    raise CamError(
        f"CAM needs the target layer to be followed by global average pooling and one "
        f"nn.Linear taking its {channels} channels; this model's Linear layers: {have}. "
        "Pick the layer right before the pooling (e.g. ResNet's 'layer4'), or use 'gradcam' "
        "(on a pooling + Linear head it is CAM up to a factor)")


def cam_weights(weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CAM's channel weights ``w_c = W_tc`` ``(B, C)`` from the fc weight ``W`` ``(K, C)``."""
    return weight.detach().float()[targets.long()]


def cam(ctx: CamContext) -> torch.Tensor:
    """CAM (Zhou et al. 2016) on a :class:`CamContext`: ``ReLU(Σ_c W_tc A_c)``.

    Raises:
        CamError: no Linear takes the layer's channels, or the model's logits are not
            ``fc(mean_ij(A))`` (the head is not global average pooling + that Linear).
    """
    a = ctx.acts.float()
    name, fc = fc_layer(ctx.model, a.shape[1])
    pooled = a.mean(dim=(2, 3)) @ fc.weight.detach().float().t()
    if fc.bias is not None:
        pooled = pooled + fc.bias.detach().float()
    logits = ctx.logits(ctx.x)
    if pooled.shape != logits.shape or not torch.allclose(
            pooled, logits, rtol=1e-3, atol=1e-3 * float(logits.abs().max().clamp(min=1.0))):
        raise CamError(
            f"CAM needs the model's output to be {name}(global average pool of layer "
            f"{ctx.layer!r}), and it is not (another layer or a nonlinearity lies between); "
            "pick the layer right before the pooling, or use 'gradcam'")
    return reduce_weights(cam_weights(fc.weight, ctx.targets), a, ctx.eigen_smooth)


# -- ShapleyCAM ---------------------------------------------------------------------------------

def shapleycam_weights(grads: torch.Tensor, hvp: torch.Tensor) -> torch.Tensor:
    """ShapleyCAM's channel weights ``w_c = mean_ij(G - ½ HVP)`` ``(B, C)``."""
    return (grads - 0.5 * hvp).mean(dim=(2, 3))


def shapleycam(ctx: CamContext) -> torch.Tensor:
    """ShapleyCAM on a :class:`CamContext`: gradient and Hessian-vector product at the layer.

    ``A, G = ctx.capture(x, create_graph=True)``; ``HVP = autograd.grad(G, A, grad_outputs=A)``
    (0 when ``G`` does not depend on ``A``).
    """
    a, g = ctx.capture(ctx.x, None, True)
    with torch.enable_grad():
        hvp = None
        if g.requires_grad:
            (hvp,) = torch.autograd.grad(g, [a], grad_outputs=a.detach(), allow_unused=True)
    a, g = a.detach().float(), g.detach().float()
    hvp = torch.zeros_like(g) if hvp is None else hvp.detach().float()
    return reduce_weights(shapleycam_weights(g, hvp), a, ctx.eigen_smooth)


# -- SmoothGrad-CAM++ ---------------------------------------------------------------------------

def smoothgradcampp_weights(acts: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor,
                            d3: torch.Tensor) -> torch.Tensor:
    """SmoothGrad-CAM++ channel weights from the averaged derivatives ``D₁, D₂, D₃``.

    ``α = D₂ / (2 D₂ + (Σ_ab A_ab) D₃ + ε)`` (0 where ``D₂ = 0``), ``w_c = Σ_ij α ReLU(D₁)``.
    With ``n = 1`` and no noise this is Grad-CAM++'s weight.
    """
    sum_a = acts.sum(dim=(2, 3), keepdim=True)
    alpha = d2 / (2 * d2 + sum_a * d3 + _EPS)
    alpha = torch.where(d2 != 0, alpha, torch.zeros_like(alpha))
    return (alpha * F.relu(d1)).sum(dim=(2, 3))


def noisy_derivatives(ctx: CamContext, num_samples: int, std: float, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``D_p = (1/n) Σ_m G_m^p`` (p = 1, 2, 3) over inputs ``x + δ_m``, ``δ_m ~ N(0, std²)``.

    The noise ``(B, C, H, W)`` of sample ``m`` is the ``m``-th draw of a CPU generator seeded
    with ``seed``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    d1 = d2 = d3 = None
    for _ in range(num_samples):
        noise = torch.randn(ctx.x.shape, generator=gen, dtype=torch.float32) * std
        _, g = ctx.capture(ctx.x + noise.to(ctx.x.device, ctx.x.dtype))
        g = g.double()
        if d1 is None:
            d1, d2, d3 = g.clone(), g.pow(2), g.pow(3)
        else:
            d1 += g
            d2 += g.pow(2)  # type: ignore[operator]
            d3 += g.pow(3)  # type: ignore[operator]
    assert d1 is not None and d2 is not None and d3 is not None
    return d1 / num_samples, d2 / num_samples, d3 / num_samples


def smoothgradcampp(ctx: CamContext) -> torch.Tensor:
    """SmoothGrad-CAM++ on a :class:`CamContext` (:data:`SMOOTH_SAMPLES` noisy inputs)."""
    d1, d2, d3 = noisy_derivatives(ctx, SMOOTH_SAMPLES, SMOOTH_STD, SEED)
    a = ctx.acts.double()
    w = smoothgradcampp_weights(a, d1, d2, d3)
    return reduce_weights(w.float(), ctx.acts.float(), ctx.eigen_smooth)


# -- FullGrad -----------------------------------------------------------------------------------

def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Conv2d`` / ``nn.BatchNorm2d`` (exact types, as pytorch-grad-cam) with a bias."""
    return [(n, m) for n, m in model.named_modules()
            if type(m) in (nn.Conv2d, nn.BatchNorm2d) and getattr(m, "bias", None) is not None]


def effective_bias(module: nn.Module) -> torch.Tensor:
    """The bias a layer adds: a conv's ``bias``; batch norm's ``β - μ γ / √(σ² + ε)``."""
    if isinstance(module, nn.BatchNorm2d):
        assert module.running_mean is not None and module.running_var is not None
        weight = module.weight if module.weight is not None else torch.ones_like(
            module.running_mean)
        return (module.bias - module.running_mean * weight
                / torch.sqrt(module.running_var + module.eps)).detach().float()
    bias = getattr(module, "bias", None)
    if not isinstance(bias, torch.Tensor):
        raise CamError(f"{type(module).__name__} has no bias")
    return bias.detach().float()


def _psi(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """FullGrad's post-processing per channel: ``|t|``, min-max (``+1e-7``), bilinear resize."""
    t = t.abs().float()
    t = t - t.amin(dim=(2, 3), keepdim=True)
    t = t / (t.amax(dim=(2, 3), keepdim=True) + 1e-7)
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t


def fullgrad_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """FullGrad's per-part maps ``(B, 3 + L, H, W)``: ``ψ(∇ₓS ⊙ x)`` per input channel, then
    ``Σ_c ψ(b_c ∇_z S_c)`` for each of the ``L`` :func:`bias_layers`.

    One forward and one backward; ``S`` is the sum over images of each one's target logit.
    Every hook is removed on the way out (:class:`HookScope`).
    """
    layers = bias_layers(model)
    outs: dict[str, torch.Tensor] = {}

    def make(name: str):
        def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
            if isinstance(out, torch.Tensor) and out.requires_grad:
                outs[name] = out
                return out.clone()  # an in-place op downstream modifies the clone
            return None
        return hook

    z = x.detach().clone().requires_grad_()
    with HookScope() as hooks:
        for name, m in layers:
            hooks.forward(m, make(name))
        with torch.inference_mode(False), torch.enable_grad():
            logits = _logits(model(z))
            score = logits.gather(1, targets.long().reshape(-1, 1).to(logits.device)).sum()
            names = [n for n, _ in layers if n in outs]
            grads = torch.autograd.grad(score, [z, *(outs[n] for n in names)],
                                        allow_unused=True)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    gx = grads[0] if grads[0] is not None else torch.zeros_like(z)
    parts = [_psi(gx * z.detach(), size)]
    modules = dict(layers)
    for n, g in zip(names, grads[1:], strict=True):
        if g is None:
            continue
        b = effective_bias(modules[n]).to(g.device)
        parts.append(_psi(b[None, :, None, None] * g, size).sum(dim=1, keepdim=True))
    return torch.cat(parts, dim=1)


def fullgrad(ctx: CamContext) -> torch.Tensor:
    """FullGrad on a :class:`CamContext`: ``(B, H, W)``, the sum of :func:`fullgrad_maps`.

    With ``eigen_smooth`` (as pytorch-grad-cam): the parts, each min-max normalised and
    resized to 1/8 of the input, are projected on their first principal component
    (:func:`hooklab.cam.methods.project`) and resized back.
    """
    parts = fullgrad_maps(ctx.model, ctx.x, ctx.targets)
    if not ctx.eigen_smooth:
        return parts.sum(dim=1)
    h, w = parts.shape[-2:]
    small = _psi(parts, (max(1, h // 8), max(1, w // 8)))
    proj = project(small)
    return F.interpolate(proj[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]


register(CamMethod("cam", None, False, True, "CAM", "Zhou et al., CVPR 2016", run=cam),
         "classactivationmap")
register(CamMethod("shapleycam", None, True, True, "ShapleyCAM", "Cai et al., 2025",
                   run=shapleycam))
register(CamMethod("smoothgradcam++", None, True, True, "SmoothGrad-CAM++",
                   "Omeiza et al., arXiv 1908.01224 (2019)", run=smoothgradcampp),
         "smoothgradcampp", "smoothgradcamplusplus")
register(CamMethod("fullgrad", None, True, True, "FullGrad", "Srinivas & Fleuret, NeurIPS 2019",
                   run=fullgrad))
