"""CAM methods that run the model again without gradients: AblationCAM, SS-CAM, IS-CAM.

Each gets a :class:`~hooklab.cam.context.CamContext` from :func:`hooklab.cam.engine.compute`
(``ctx.logits(z)``: logits of inputs; ``ctx.with_layer_output(i, acts)``: logits of image ``i``
with the layer's output replaced) and returns the raw map ``(B, h, w)`` after the final ReLU.
Masks are ``H_k = minmax(up(A_k))`` (bilinear, ``align_corners=False``, normalised after
upsampling) as in :func:`hooklab.cam.methods.scorecam_weights`; ``p_t(z)`` is the target's
class-softmax probability.

=========== =====================================================================================
ablationcam ``w_k = (y - y_k) / y`` with ``y`` the target logit and ``y_k`` the target logit with
            channel ``k`` of the layer set to 0; ``L = ReLU(Σ_k w_k A_k)`` (Desai & Ramaswamy,
            WACV 2020, as pytorch-grad-cam weights it). Batched: image ``i``'s ``C + 1`` copies
            (the unablated one first) go ``batch_size`` at a time through the network above the
            layer: ``⌈(C + 1) / batch_size⌉`` forwards per image (:func:`ablation_forwards`).
sscam       ``w_k = (1/N) Σ_n p_t(X ⊙ (H_k + δ_kn))``, ``δ ~ N(0, σ²)`` per pixel, seeded
            (Wang et al., "SS-CAM: Smoothed Score-CAM", 2020; noise on the mask as torchcam's
            SSCAM, σ = 2 as there; N = 10, torchcam 35). ``N·C`` forwards (in batches) per image.
iscam       ``w_k = (1/N) Σ_{i=1..N} p_t(X ⊙ c_i H_k)`` with ``c_i = Σ_{j=1..i} j/N`` (Naidu et al.,
            "IS-CAM: Integrated Score-CAM", 2020; the coefficients of torchcam's ISCAM; N = 10).
=========== =====================================================================================

The peers (pytorch-grad-cam, torchcam) normalise Score-CAM-family weights with a softmax over
channels of a per-channel score; hooklab keeps the target probability itself, as its Score-CAM does
(see ``tests/cam/test_new_peers.py`` for how the two are compared).

Example:
    >>> res = hooklab.cam.compute(model, x, "ablationcam", layer="layer4")
    >>> ablation_forwards(512, batch_size=128)     # per image
    5
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hooklab.cam.context import CamContext
from hooklab.cam.methods import CamMethod, minmax, reduce_weights, register

log = logging.getLogger(__name__)

__all__ = ["ablation_forwards", "ablation_weights", "ablationcam", "iscam", "iscam_coefficients",
           "iscam_weights", "sscam", "sscam_weights", "SEED", "SSCAM_SAMPLES", "SSCAM_STD",
           "ISCAM_SAMPLES"]

#: seed of the noise (SS-CAM): the same map on every run for the same seed.
SEED = 0
#: SS-CAM's noisy samples per channel (torchcam uses 35: 35·C forwards per image) and the
#: noise's standard deviation (torchcam's 2.0).
SSCAM_SAMPLES = 10
SSCAM_STD = 2.0
#: IS-CAM's integration steps (torchcam's default).
ISCAM_SAMPLES = 10

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def ablation_forwards(channels: int, batch_size: int) -> int:
    """Forwards per image of :func:`ablation_weights`: ``⌈(C + 1) / batch_size⌉``."""
    return math.ceil((channels + 1) / max(1, int(batch_size)))


def ablation_weights(acts: torch.Tensor, targets: torch.Tensor,
                     run_fn: Callable[[int, torch.Tensor], torch.Tensor],
                     batch_size: int = 128) -> tuple[torch.Tensor, int]:
    """AblationCAM weights ``w_k = (y - y_k) / y`` ``(B, C)`` and the number of forwards.

    Args:
        acts: the layer's activation ``(B, C, h, w)``.
        targets: ``(B,)`` target class per image.
        run_fn: ``run_fn(i, a)`` -> logits ``(N, K)`` of image ``i`` with the layer's output
            replaced by each of ``a`` ``(N, C, h, w)``
            (:meth:`~hooklab.cam.context.CamContext.with_layer_output`).
        batch_size: copies per forward.

    Returns:
        ``(weights, forwards)``. ``y`` is the target logit with the layer output unchanged (the
        first copy), so it comes from the same replaced forward as the ablated ones.
    """
    b, c = acts.shape[:2]
    bs = max(1, int(batch_size))
    weights = torch.empty(b, c, dtype=torch.float32, device=acts.device)
    forwards = 0
    for i in range(b):
        t = int(targets[i])
        scores = []
        for s in range(0, c + 1, bs):
            rows = torch.arange(s, min(s + bs, c + 1))
            chunk = acts[i:i + 1].repeat(rows.numel(), 1, 1, 1)
            ablated = rows > 0  # row r zeroes channel r - 1; row 0 is the unablated copy
            chunk[ablated.nonzero()[:, 0], rows[ablated] - 1] = 0
            scores.append(run_fn(i, chunk)[:, t].detach().float())
            forwards += 1
        y_all = torch.cat(scores)
        y, y_k = y_all[0], y_all[1:]
        safe = y if float(y.abs()) > 1e-12 else y.new_tensor(1e-12)
        weights[i] = (y - y_k) / safe
    return weights, forwards


def ablationcam(ctx: CamContext) -> torch.Tensor:
    """AblationCAM on a :class:`CamContext`: ``ReLU(Σ_k w_k A_k)`` with :func:`ablation_weights`.

    Logs the number of forwards (``⌈(C + 1) / batch_size⌉`` per image).
    """
    w, forwards = ablation_weights(ctx.acts, ctx.targets, ctx.with_layer_output, ctx.batch_size)
    log.info("AblationCAM at %s: %d forwards for %d image(s), %d channels, batch_size %d",
             ctx.layer, forwards, ctx.acts.shape[0], ctx.acts.shape[1], ctx.batch_size)
    return reduce_weights(w, ctx.acts.float(), ctx.eigen_smooth)


def _masks(acts_i: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``H_k = minmax(up(A_k))`` ``(C, H, W)`` for one image's ``(C, h, w)`` activation."""
    up = F.interpolate(acts_i[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return minmax(up)


def _probs(x_i: torch.Tensor, masks: torch.Tensor, t: int, score_fn: ScoreFn,
           batch_size: int) -> torch.Tensor:
    """``p_t(x ⊙ m)`` for each mask ``m`` of ``masks`` ``(N, H, W)``, ``batch_size`` per forward."""
    out = []
    for s in range(0, masks.shape[0], batch_size):
        chunk = masks[s:s + batch_size]
        logits = score_fn(x_i[None] * chunk[:, None].to(x_i.dtype))
        out.append(torch.softmax(logits.float(), dim=1)[:, t])
    return torch.cat(out)


def sscam_weights(acts: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, score_fn: ScoreFn,
                  batch_size: int = 128, num_samples: int = SSCAM_SAMPLES,
                  std: float = SSCAM_STD, seed: int = SEED) -> torch.Tensor:
    """SS-CAM weights ``w_k = (1/N) Σ_n p_t(X ⊙ (H_k + δ_kn))`` ``(B, C)``.

    The noise ``δ`` ``(C, H, W)`` per image and sample is drawn from a CPU generator seeded with
    ``seed`` (images, then samples, then channel chunks of ``batch_size`` in order), so a seed
    gives the same weights on every run.
    """
    b, c = acts.shape[:2]
    size = tuple(x.shape[-2:])
    gen = torch.Generator().manual_seed(int(seed))
    weights = torch.zeros(b, c, dtype=torch.float32, device=acts.device)
    for i in range(b):
        masks = _masks(acts[i], size)
        t = int(targets[i])
        for _ in range(num_samples):
            for s in range(0, c, batch_size):
                chunk = masks[s:s + batch_size]
                noise = torch.randn(chunk.shape, generator=gen, dtype=torch.float32) * std
                noisy = chunk + noise.to(chunk.device)
                weights[i, s:s + chunk.shape[0]] += _probs(x[i], noisy, t, score_fn, batch_size)
    return weights / num_samples


def sscam(ctx: CamContext) -> torch.Tensor:
    """SS-CAM on a :class:`CamContext` (:func:`sscam_weights` with the module's defaults)."""
    w = sscam_weights(ctx.acts, ctx.x, ctx.targets, ctx.logits, ctx.batch_size, SSCAM_SAMPLES,
                      SSCAM_STD, SEED)
    return reduce_weights(w, ctx.acts.float(), ctx.eigen_smooth)


def iscam_coefficients(num_samples: int) -> torch.Tensor:
    """IS-CAM's mask scales ``c_i = Σ_{j=1..i} j/N`` for ``i = 1..N`` (torchcam's ISCAM)."""
    steps = torch.arange(1, num_samples + 1, dtype=torch.float64) / num_samples
    return steps.cumsum(0).float()


def iscam_weights(acts: torch.Tensor, x: torch.Tensor, targets: torch.Tensor, score_fn: ScoreFn,
                  batch_size: int = 128, num_samples: int = ISCAM_SAMPLES) -> torch.Tensor:
    """IS-CAM weights ``w_k = (1/N) Σ_i p_t(X ⊙ c_i H_k)`` ``(B, C)`` (:func:`iscam_coefficients`)."""
    b, c = acts.shape[:2]
    size = tuple(x.shape[-2:])
    coeffs = iscam_coefficients(num_samples).tolist()
    weights = torch.zeros(b, c, dtype=torch.float32, device=acts.device)
    for i in range(b):
        masks = _masks(acts[i], size)
        t = int(targets[i])
        for coeff in coeffs:
            weights[i] += _probs(x[i], coeff * masks, t, score_fn, batch_size)
    return weights / num_samples


def iscam(ctx: CamContext) -> torch.Tensor:
    """IS-CAM on a :class:`CamContext` (:func:`iscam_weights` with the module's defaults)."""
    w = iscam_weights(ctx.acts, ctx.x, ctx.targets, ctx.logits, ctx.batch_size, ISCAM_SAMPLES)
    return reduce_weights(w, ctx.acts.float(), ctx.eigen_smooth)


register(CamMethod("ablationcam", None, False, True, "AblationCAM",
                   "Desai & Ramaswamy, WACV 2020", run=ablationcam), "ablation")
register(CamMethod("sscam", None, False, True, "SS-CAM", "Wang et al., arXiv 2006.14255 (2020)",
                   run=sscam), "smoothscorecam")
register(CamMethod("iscam", None, False, True, "IS-CAM", "Naidu et al., arXiv 2010.03023 (2020)",
                   run=iscam), "integratedscorecam")
