"""The CAM family as pure functions of a layer's activations and gradients.

Every function here takes the target layer's activation ``A`` of shape ``(B, C, h, w)`` and,
for gradient methods, the gradient ``G = dS/dA`` of each sample's target score ``S`` (same
shape), and returns the raw class activation map ``(B, h, w)`` *after* the final ReLU and
*before* resizing and min-max normalisation (those are done by :mod:`hooklab.cam.engine`).

Formulas (``Σ_c`` over channels, ``Σ_ij`` over spatial positions, ``Z = h·w``):

========== ==================================================================================
gradcam    ``w_c = (1/Z) Σ_ij G_cij``;  ``L = ReLU(Σ_c w_c A_c)``  (Selvaraju et al. 2017)
gradcam++  ``α_cij = G² / (2 G² + Σ_ab A_cab · G³)`` (0 where G = 0);
           ``w_c = Σ_ij α_cij ReLU(G_cij)``; ``L = ReLU(Σ_c w_c A_c)``  (Chattopadhyay et al.
           2018, with the exponential-score derivatives approximated by powers of G)
xgradcam   ``w_c = Σ_ij G_cij A_cij / Σ_ij A_cij``; ``L = ReLU(Σ_c w_c A_c)``  (Fu et al. 2020)
hirescam   ``L = ReLU(Σ_c G_c ⊙ A_c)``  (Draelos & Carin 2020)
layercam   ``L = ReLU(Σ_c ReLU(G_c) ⊙ A_c)``  (Jiang et al. 2021)
scorecam   ``H_k = minmax(up(A_k))``; ``w_k = softmax(f(X ⊙ H_k))_t``; ``L = ReLU(Σ_k w_k A_k)``
           (Wang et al. 2020, as in the authors' code: the class-softmax probability of the
           target on the masked input)
eigencam   ``L = ReLU(Ā v₁)`` with ``Ā`` the ``(h·w, C)`` activation matrix centred over
           positions and ``v₁`` its first right singular vector, signed so that the projection
           has positive skew  (Muhammad & Yeasin 2020)
========== ==================================================================================

``eigen_smooth`` (pytorch-grad-cam's option, for every method that forms weighted activations
``W_c = w_c A_c`` or ``G_c ⊙ A_c`` before the channel sum): the map is the projection of ``W`` on
its first principal component (:func:`project`, the same SVD as EigenCAM) instead of
``Σ_c W_c``. A method's ``weighted`` function returns ``W`` ``(B, C, h, w)``.

Example:
    >>> raw = gradcam(activations, gradients)       # (B, h, w)
    >>> METHODS["layercam"].fn(activations, gradients)
    >>> METHODS["gradcam"].map(activations, gradients, eigen_smooth=True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hooklab.cam.context import CamContext
from hooklab.cam.eig import top_component, top_eigenpair

_EPS = 1e-7


def _weighted(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``ReLU(Σ_c w_c A_c)`` for weights ``(B, C)`` and activations ``(B, C, h, w)``."""
    return F.relu(torch.einsum("bc,bchw->bhw", weights, acts))


def _gradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads.mean(dim=(2, 3))


def _gradcampp_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    g2 = grads.pow(2)
    g3 = grads.pow(3)
    sum_a = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + _EPS)
    alpha = alpha.masked_fill_(grads == 0, 0.0)
    return (alpha * F.relu(grads)).sum(dim=(2, 3))


def _xgradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return (grads * acts).sum(dim=(2, 3)) / (acts.sum(dim=(2, 3)) + _EPS)


def channel_weighted(weights_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                     ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``W = w_c A_c`` ``(B, C, h, w)`` for a method whose channel weights ``weights_fn`` gives."""

    def weighted(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return weights_fn(acts, grads)[:, :, None, None] * acts

    return weighted


def gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: channel weights are the spatial mean of the gradients.

    ``w_c = mean_ij G_cij``, ``L = ReLU(Σ_c w_c A_c)``.
    """
    return _weighted(_gradcam_weights(acts, grads), acts)


def gradcampp(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: pixel-wise weighted positive gradients.

    ``α = G² / (2 G² + Σ_ab A_ab · G³)`` (0 where ``G = 0``), ``w_c = Σ_ij α_ij ReLU(G_ij)``,
    ``L = ReLU(Σ_c w_c A_c)``.
    """
    return _weighted(_gradcampp_weights(acts, grads), acts)


def xgradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: ``w_c = Σ_ij G_cij A_cij / (Σ_ij A_cij + ε)``, ``L = ReLU(Σ_c w_c A_c)``."""
    return _weighted(_xgradcam_weights(acts, grads), acts)


def hirescam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM: element-wise gradient times activation, summed over channels, then ReLU."""
    return F.relu((grads * acts).sum(dim=1))


def layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM: ``L = ReLU(Σ_c ReLU(G_c) ⊙ A_c)``."""
    return F.relu((F.relu(grads) * acts).sum(dim=1))


def eigencam(acts: torch.Tensor, grads: torch.Tensor | None = None) -> torch.Tensor:
    """EigenCAM: projection on the first principal component of the activations (class-agnostic).

    For each sample, ``M`` = the ``(h·w, C)`` activation matrix centred over positions;
    ``v₁`` = first right singular vector of ``M``; ``L = ReLU(M v₁)``. The sign of ``v₁`` is
    arbitrary in an SVD; it is chosen so that ``M v₁`` has positive skew (``Σ (M v₁)³ > 0``):
    the few positions that deviate strongly from the bulk (the object rather than the
    background) come out positive.
    """
    _, c, h, w = acts.shape
    a = acts.detach().flatten(2).transpose(1, 2)  # (B, hw, C): a view for channels-last
    # M v1 = sigma1 u1: the top eigenpair of the smaller Gram matrix of M (much faster than an
    # SVD of M on CPU), in float64.
    if h * w <= c:
        m = a.double()
        m = m - m.mean(dim=1, keepdim=True)
        proj = top_component(m @ m.transpose(1, 2))  # (B, hw, hw)
    else:
        proj = _project_on_top_channel_component(a)
    return positive_skew_map(proj, acts)


def positive_skew_map(proj: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``ReLU`` of a principal-component projection ``(B, h·w)``, oriented to positive skew,
    as a ``(B, h, w)`` map in ``acts``' dtype.

    An SVD's sign is arbitrary: the projection is flipped where ``Σ proj³ < 0``, so the small
    region that deviates strongly from the bulk (the object, not the background) comes out
    positive.
    """
    b, _, h, w = acts.shape
    sign = torch.where(proj.pow(3).sum(dim=1) < 0, -1.0, 1.0).to(proj.dtype)
    return F.relu(proj * sign[:, None]).reshape(b, h, w).to(acts.dtype)


#: Positions per float64 chunk in :func:`_project_on_top_channel_component`.
_GRAM_ROWS = 256


def _project_on_top_channel_component(a: torch.Tensor) -> torch.Tensor:
    """``M v₁`` ``(B, hw)`` for ``a`` ``(B, hw, C)``, ``M = a`` centred over positions and ``v₁``
    the top eigenvector of ``MᵀM`` (``C × C``), all in float64.

    ``MᵀM = aᵀa − hw·μμᵀ`` and ``M v₁ = a v₁ − μ·v₁``, accumulated over chunks of positions
    converted to float64 one at a time: a float64 copy of a ``layer1`` activation (16 × 3136 ×
    64) would be a fresh 26 MB allocation, whose page faults alone cost as much as the rest
    of EigenCAM there.
    """
    b, hw, c = a.shape
    chunks = a.split(_GRAM_ROWS, dim=1)
    mu = torch.zeros(b, 1, c, dtype=torch.float64, device=a.device)
    gram = torch.zeros(b, c, c, dtype=torch.float64, device=a.device)
    for part in chunks:
        d = part.double()
        mu += d.sum(dim=1, keepdim=True)
        gram.baddbmm_(d.transpose(1, 2), d)
    mu /= hw
    gram -= hw * mu.transpose(1, 2) * mu
    _, vec = top_eigenpair(gram)
    v = vec[..., None]  # (B, C, 1)
    proj = torch.cat([torch.bmm(part.double(), v) for part in chunks], dim=1)[..., 0]
    return proj - torch.bmm(mu, v)[..., 0]


def project(weighted: torch.Tensor) -> torch.Tensor:
    """``eigen_smooth``: ``ReLU`` of the first-principal-component projection of ``(B, C, h, w)``.

    pytorch-grad-cam's ``get_2d_projection`` (positions centred, first right singular vector),
    with :func:`eigencam`'s sign rule (positive skew) where the peer keeps the SVD's arbitrary
    sign. NaNs count as 0, as in the peer.
    """
    return eigencam(torch.nan_to_num(weighted, nan=0.0))


def minmax(x: torch.Tensor, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """Min-max normalise over ``dims`` to [0, 1]; a constant slice becomes all zeros.

    ``(x - min) / (max - min)``, as the seed does (``cam - cam.min()``, then ``/ cam.max()``
    when it is positive).
    """
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    lo = x.amin(dim=dims, keepdim=True)
    out = x - lo
    hi = out.amax(dim=dims, keepdim=True)
    ok = hi > 0
    # In place, and the zeroing pass only where a slice needs it: a CAM pass normalises every
    # map at the input's resolution (24 maps of 16 x 224 x 224 in a layer sweep).
    out.div_(torch.where(ok, hi, torch.ones_like(hi)))
    if not bool(ok.all()):
        out = torch.where(ok, out, torch.zeros_like(out))
    return out


def scorecam_weights(acts: torch.Tensor, x: torch.Tensor, targets: torch.Tensor,
                     score_fn: Callable[[torch.Tensor], torch.Tensor],
                     batch_size: int = 128) -> torch.Tensor:
    """Score-CAM channel weights ``w_k = softmax(f(X ⊙ H_k))_t`` for every sample and channel.

    Args:
        acts: activations ``(B, C, h, w)``.
        x: inputs ``(B, 3, H, W)``.
        targets: target class per sample ``(B,)``.
        score_fn: the model (logits out); called under ``torch.no_grad`` on batches of masked
            inputs (``batch_size`` at a time).
        batch_size: masked inputs per forward.

    Returns:
        ``(B, C)`` weights.
    """
    b, c = acts.shape[:2]
    size = x.shape[-2:]
    weights = torch.empty(b, c, dtype=torch.float32, device=acts.device)
    for i in range(b):
        up = F.interpolate(acts[i:i + 1].float(), size=size, mode="bilinear",
                           align_corners=False)[0]  # (C, H, W)
        masks = minmax(up)  # per channel
        t = int(targets[i])
        for s in range(0, c, batch_size):
            chunk = masks[s:s + batch_size]
            masked = x[i:i + 1] * chunk[:, None].to(x.dtype)
            out = score_fn(masked)
            weights[i, s:s + chunk.shape[0]] = torch.softmax(out.float(), dim=1)[:, t]
    return weights


def scorecam(ctx: CamContext) -> torch.Tensor:
    """Score-CAM on a :class:`~hooklab.cam.context.CamContext`: ``ReLU(Σ_k w_k A_k)`` with
    :func:`scorecam_weights`."""
    w = scorecam_weights(ctx.acts, ctx.x, ctx.targets, ctx.logits, batch_size=ctx.batch_size)
    return reduce_weights(w, ctx.acts.float(), ctx.eigen_smooth)


def reduce_weights(weights: torch.Tensor, acts: torch.Tensor, eigen_smooth: bool = False
                   ) -> torch.Tensor:
    """``ReLU(Σ_c w_c A_c)``, or with ``eigen_smooth`` :func:`project` of ``w_c A_c``.

    For model-calling methods (their :class:`CamContext` carries ``eigen_smooth``).
    """
    if eigen_smooth:
        return project(weights[:, :, None, None] * acts)
    return _weighted(weights, acts)


@dataclass(frozen=True)
class CamMethod:
    """One CAM method of the registry.

    Attributes:
        name: canonical name (``"gradcam"``).
        fn: ``fn(acts, grads) -> (B, h, w)`` raw map (``None`` for a method that needs the
            model).
        needs_grad: whether the gradient of the target score is needed.
        class_specific: whether the map depends on the target class.
        title: display name.
        reference: the paper.
        run: ``run(ctx) -> (B, h, w)`` raw map for a method that calls the model again
            (Score-CAM); it gets a :class:`hooklab.cam.context.CamContext` from
            :func:`hooklab.cam.engine.compute`.
        weighted: ``weighted(acts, grads) -> (B, C, h, w)`` the weighted activations whose
            channel sum (then ReLU) is the map; :meth:`map` projects them instead with
            ``eigen_smooth``. ``None`` for a method whose map is a projection already
            (EigenCAM: ``eigen_smooth`` changes nothing, as in pytorch-grad-cam) and for
            model-calling methods (they read ``ctx.eigen_smooth``).
    """

    name: str
    fn: Callable[..., torch.Tensor] | None
    needs_grad: bool
    class_specific: bool
    title: str
    reference: str
    run: Callable[[CamContext], torch.Tensor] | None = None
    weighted: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    @property
    def needs_model(self) -> bool:
        """Whether the method calls the model again (it cannot be computed from a stored run)."""
        return self.run is not None

    def map(self, acts: torch.Tensor, grads: torch.Tensor | None, eigen_smooth: bool = False
            ) -> torch.Tensor:
        """The raw ``(B, h, w)`` map from activations and gradients (not for Score-CAM).

        With ``eigen_smooth`` the first-principal-component projection of the weighted
        activations (:func:`project`) replaces their channel sum.
        """
        if self.fn is None:
            raise ValueError(f"{self.title} needs the model (run it with hooklab.cam.compute)")
        if eigen_smooth and self.weighted is not None:
            return project(self.weighted(acts, grads))  # type: ignore[arg-type]
        return self.fn(acts, grads)


METHODS: dict[str, CamMethod] = {
    "gradcam": CamMethod("gradcam", gradcam, True, True, "Grad-CAM",
                         "Selvaraju et al., ICCV 2017",
                         weighted=channel_weighted(_gradcam_weights)),
    "gradcam++": CamMethod("gradcam++", gradcampp, True, True, "Grad-CAM++",
                           "Chattopadhyay et al., WACV 2018",
                           weighted=channel_weighted(_gradcampp_weights)),
    "xgradcam": CamMethod("xgradcam", xgradcam, True, True, "XGrad-CAM",
                          "Fu et al., BMVC 2020",
                          weighted=channel_weighted(_xgradcam_weights)),
    "hirescam": CamMethod("hirescam", hirescam, True, True, "HiResCAM",
                          "Draelos & Carin, 2020", weighted=lambda a, g: g * a),
    "layercam": CamMethod("layercam", layercam, True, True, "LayerCAM",
                          "Jiang et al., IEEE TIP 2021", weighted=lambda a, g: F.relu(g) * a),
    "scorecam": CamMethod("scorecam", None, False, True, "Score-CAM",
                          "Wang et al., CVPR-W 2020", run=scorecam),
    "eigencam": CamMethod("eigencam", eigencam, False, False, "EigenCAM",
                          "Muhammad & Yeasin, IJCNN 2020"),
}

_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}


def register(method: CamMethod, *aliases: str) -> CamMethod:
    """Add a method to :data:`METHODS` (and spellings to the aliases); returns it.

    The modules holding further methods call this at import; ``hooklab/cam/__init__.py``
    imports them, so every ``hooklab.cam`` user sees the whole registry.

    Raises:
        ValueError: the name is taken by another method.
    """
    if method.name in METHODS and METHODS[method.name] is not method:
        raise ValueError(f"a CAM method named {method.name!r} exists already")
    METHODS[method.name] = method
    for alias in aliases:
        _ALIASES[alias.lower().replace("-", "").replace("_", "").replace(" ", "")] = method.name
    return method


def method_name(name: str) -> str:
    """Canonical method name: case, ``-``, ``_`` and spaces ignored (``"Grad-CAM++"`` works).

    Raises:
        KeyError: unknown method (:mod:`hooklab.cam.engine` turns it into a ``CamError``).
    """
    key = str(name).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise KeyError(key)
    return key
