"""ROAD: RemOve And Debias (Rong et al. 2022), with noisy linear imputation, batched in torch.

A map is scored by removing pixels in the order it ranks them and watching the model's score
of the target class. Removed pixels are not set to a constant (which leaks the mask's shape to
the model); they are *imputed*: each removed pixel becomes the weighted mean of its 8
neighbours (weights 1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones, neighbours
outside the image left out), the linear system over all removed pixels solved jointly, plus
Gaussian noise of standard deviation ``noise`` (0.01).

* **MoRF** (most relevant first) at percentile ``p``: the pixels whose map value is at least
  the map's ``p``-th percentile (``numpy.percentile``, linear) are removed, i.e. the top
  ``100 − p`` %. The score change ``s(imputed) − s(image)``: lower (a larger drop) is better.
* **LeRF** (least relevant first) at ``p``: the same with the map ``1 − m``, i.e. the least
  relevant ``100 − p`` % removed. Higher (a smaller drop) is better.
* Each averaged over the percentiles 10, 20, …, 90; **combined** = ``(LeRF − MoRF) / 2``,
  higher is better.

This is pytorch-grad-cam 1.5.7's ``ROADMostRelevantFirst``, ``ROADLeastRelevantFirst``, their
``…Average`` and ``ROADCombined`` (``pytorch_grad_cam/metrics/road.py``) on the same maps, with
the score ``"logit"`` (its ``ClassifierOutputTarget``) or ``"softmax"``
(``ClassifierOutputSoftmaxTarget``). The peer solves the system with SciPy's sparse solver;
here a Jacobi-preconditioned conjugate gradient in float64 solves every image, channel and
percentile at once (the system is symmetric positive definite whenever a pixel is kept). With
``seed=None`` the noise comes from torch's global generator in the peer's order (per
percentile, per image; LeRF before MoRF as in ``ROADCombined``), so the same global seed gives
the same numbers; the default ``seed=0`` uses a private seeded generator.

Example:
    >>> r = road(model, x, res.maps, res.targets)
    >>> r.morf_score.mean(), r.lerf_score.mean(), r.combined.mean()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.core.errors import HooklabError
from hooklab.core.modes import eval_mode

__all__ = ["RoadError", "RoadResult", "road", "impute", "PERCENTILES", "NOISE"]

#: ROAD's percentiles (pytorch-grad-cam's ``…Average`` and ``ROADCombined`` defaults).
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: Standard deviation of the noise added to imputed pixels.
NOISE = 0.01

_W_EDGE, _W_DIAG = 1 / 6, 1 / 12


class RoadError(HooklabError, ValueError):
    """Maps, images or settings that ROAD cannot score."""


_OFFSETS = ((-1, -1, _W_DIAG), (-1, 0, _W_EDGE), (-1, 1, _W_DIAG), (0, -1, _W_EDGE),
            (0, 1, _W_EDGE), (1, -1, _W_DIAG), (1, 0, _W_EDGE), (1, 1, _W_DIAG))


def _neighbours(t: torch.Tensor) -> torch.Tensor:
    """``Σ_j w_ij t_j`` over the 8 neighbours of every pixel (outside the image: 0)."""
    h, w = t.shape[-2:]
    pad = F.pad(t, (1, 1, 1, 1))
    out = torch.zeros_like(t)
    for dy, dx, wt in _OFFSETS:
        out += wt * pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return out


def _solve(x: torch.Tensor, keep: torch.Tensor, tol: float = 1e-10,
           max_iter: int | None = None) -> torch.Tensor:
    """Linear imputation without noise: ``x`` ``(M, C, H, W)`` float64, ``keep`` ``(M, 1, H, W)``
    bool; returns ``x`` with every removed pixel the weighted mean of its neighbours."""
    h, w = x.shape[-2:]
    conv = _neighbours
    kf = keep.to(x.dtype)
    free = 1.0 - kf
    s = _neighbours(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))  # Σ w in the image
    b = free * conv(x * kf)
    u = torch.zeros_like(x)
    r = b.clone()
    z = r / s
    p = z.clone()
    rz = (r * z).sum(dim=(2, 3), keepdim=True)
    bnorm = b.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
    limit = max_iter if max_iter is not None else 40 * max(h, w) + 200
    for _ in range(limit):
        ap = free * (s * p - conv(p))
        pap = (p * ap).sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(pap > 0, rz / torch.where(pap > 0, pap, torch.ones_like(pap)),
                            torch.zeros_like(pap))
        u = u + alpha * p
        r = r - alpha * ap
        rnorm = r.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        if bool((rnorm <= tol * bnorm + 1e-300).all()):
            break
        z = r / s
        rz_new = (r * z).sum(dim=(2, 3), keepdim=True)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)),
                           torch.zeros_like(rz))
        rz = rz_new
        p = z + beta * p
    return x * kf + u * free


def _thresholds(maps: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """``(P, N)`` ``numpy.percentile`` of each map (as the peer, in the maps' dtype)."""
    return np.stack([np.array([np.percentile(mp, q) for mp in maps]) for q in percentiles])


def impute(x: torch.Tensor, keep: torch.Tensor, *, noise: float = NOISE,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Noisy linear imputation of the pixels where ``keep`` is False.

    Args:
        x: images ``(N, C, H, W)``.
        keep: ``(N, H, W)`` bool, the pixels kept.
        noise: standard deviation of the Gaussian noise on imputed pixels.
        generator: the noise's generator (``None``: torch's global one). The noise of image
            ``i`` is one ``randn(C, n_i)`` draw, ``n_i`` its imputed pixels in row-major order,
            drawn image by image (as pytorch-grad-cam's ``NoisyLinearImputer``).

    Returns:
        float32 images; kept pixels are unchanged. An image with no kept pixel is filled with
        zeros (plus noise): there is nothing to interpolate from.
    """
    if x.dim() != 4 or keep.shape != (x.shape[0], *x.shape[-2:]):
        raise RoadError(f"impute needs images (N, C, H, W) and a keep mask (N, H, W), got "
                        f"{tuple(x.shape)} and {tuple(keep.shape)}")
    filled = _solve(x.detach().double(), keep[:, None].bool()).float()
    out = x.detach().float().clone()
    for i in range(x.shape[0]):
        idx = torch.nonzero(~keep[i].reshape(-1).bool(), as_tuple=False)[:, 0]
        if idx.numel() == 0:
            continue
        vals = filled[i].reshape(x.shape[1], -1)[:, idx].cpu()
        eps = torch.randn(vals.shape, generator=generator)
        out[i].view(x.shape[1], -1)[:, idx] = (vals + noise * eps).to(out.device)
    return out


@dataclass
class RoadResult:
    """ROAD scores of a batch of maps (see the module docstring).

    Attributes:
        percentiles: the percentiles ``p``.
        morf: ``(N, P)`` score change per map and percentile, most relevant removed first
            (``None`` when not computed).
        lerf: ``(N, P)`` the same, least relevant first (``None`` when not computed).
        score: ``"logit"`` or ``"softmax"``.
    """

    percentiles: tuple[float, ...]
    morf: np.ndarray | None
    lerf: np.ndarray | None
    score: str

    @property
    def morf_score(self) -> np.ndarray:
        """``(N,)`` MoRF averaged over the percentiles (lower is better)."""
        if self.morf is None:
            raise RoadError("MoRF was not computed (which=...)")
        return self.morf.mean(axis=1)

    @property
    def lerf_score(self) -> np.ndarray:
        """``(N,)`` LeRF averaged over the percentiles (higher is better)."""
        if self.lerf is None:
            raise RoadError("LeRF was not computed (which=...)")
        return self.lerf.mean(axis=1)

    @property
    def combined(self) -> np.ndarray:
        """``(N,)`` ``(LeRF − MoRF) / 2`` (higher is better), pytorch-grad-cam's ``ROADCombined``."""
        return (self.lerf_score - self.morf_score) / 2

    def summary(self) -> dict[str, float]:
        """Means over the maps: ``road_morf``, ``road_lerf``, ``road_combined`` (those computed)."""
        out = {}
        if self.morf is not None:
            out["road_morf"] = float(self.morf_score.mean())
        if self.lerf is not None:
            out["road_lerf"] = float(self.lerf_score.mean())
        if self.morf is not None and self.lerf is not None:
            out["road_combined"] = float(self.combined.mean())
        return out


@torch.no_grad()
def _scores(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, score: str,
            batch_size: int) -> torch.Tensor:
    out = []
    with eval_mode(model):
        for s in range(0, x.shape[0], batch_size):
            logits = model(x[s:s + batch_size])
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            logits = logits.float()
            if score == "softmax":
                logits = torch.softmax(logits, dim=1)
            out.append(logits.gather(1, targets[s:s + batch_size, None].to(logits.device))[:, 0])
    return torch.cat(out).cpu()


def _check(x: Any, maps: Any, targets: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not isinstance(maps, torch.Tensor):
        raise RoadError("ROAD needs images and maps as tensors")
    if maps.dim() == 2:
        maps = maps[None]
    if x.dim() != 4 or maps.dim() != 3:
        raise RoadError(f"ROAD needs images (N, C, H, W) and maps (N, H, W), got "
                        f"{tuple(x.shape)} and {tuple(maps.shape)}")
    if maps.shape[-2] * maps.shape[-1] < 2:
        raise RoadError(f"ROAD ranks a map's pixels and imputes the removed ones from their "
                        f"neighbours; a {maps.shape[-2]}x{maps.shape[-1]} map has nothing to "
                        "rank (a layer after global pooling?): use the maps resized to the "
                        f"input's size {tuple(x.shape[-2:])} (CamResult.maps) of a spatial layer")
    if maps.shape[0] != x.shape[0] or maps.shape[-2:] != x.shape[-2:]:
        raise RoadError(f"images {tuple(x.shape)} and maps {tuple(maps.shape)} differ in "
                        f"number or size: ROAD needs one map per image at the image's size "
                        f"{tuple(x.shape[-2:])} (CamResult.maps, with x[res.sample])")
    t = torch.as_tensor(targets).long().reshape(-1)
    if t.numel() == 1 and x.shape[0] > 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise RoadError(f"{t.numel()} targets for {x.shape[0]} maps; give one per map")
    return t


def road(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: Any, *,
         percentiles: Sequence[float] = PERCENTILES, which: Sequence[str] = ("lerf", "morf"),
         score: str = "logit", noise: float = NOISE, seed: int | None = 0,
         batch_size: int = 256) -> RoadResult:
    """ROAD MoRF / LeRF (and combined) for one map per image.

    Args:
        model: the classifier (run under ``no_grad`` in eval mode, restored).
        x: images ``(N, C, H, W)`` in the model's input space.
        maps: ``(N, H, W)`` saliency maps at the image's size.
        targets: one class per map (or one for all).
        percentiles: the ``p`` of each step (see the module docstring).
        which: ``"lerf"``, ``"morf"`` or both, computed (and their noise drawn) in this order.
        score: ``"logit"`` (the target's logit) or ``"softmax"`` (its probability).
        noise: imputation noise standard deviation.
        seed: seed of the noise generator; ``None`` draws from torch's global generator.
        batch_size: imputed images per chunk (all percentiles of all images are imputed
            in chunks of this many).

    Raises:
        RoadError: a 1x1 map, maps not at the images' size, a bad setting.

    Example:
        >>> road(model, x[res.sample], res.maps, res.targets).summary()
    """
    t = _check(x, maps, targets)
    if maps.dim() == 2:
        maps = maps[None]
    if score not in ("logit", "softmax"):
        raise RoadError(f"score must be 'logit' or 'softmax', not {score!r}")
    which = tuple(which)
    if not which or any(w not in ("lerf", "morf") for w in which):
        raise RoadError(f"which must name 'lerf' and/or 'morf', got {which!r}")
    pct = tuple(float(p) for p in percentiles)
    if not pct or any(not 0 <= p <= 100 for p in pct):
        raise RoadError(f"percentiles must lie in [0, 100], got {percentiles!r}")
    if batch_size < 1:
        raise RoadError(f"batch_size must be at least 1, got {batch_size}")
    gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    m_np = maps.detach().float().cpu().numpy()
    base = _scores(model, x, t, score, batch_size)
    out: dict[str, np.ndarray] = {}
    for kind in which:
        ranked = m_np if kind == "morf" else 1 - m_np
        thr = torch.from_numpy(_thresholds(ranked, pct))  # (P, N)
        rk = torch.from_numpy(ranked)
        keep = rk[None] < thr[:, :, None, None].to(rk.dtype)  # (P, N, H, W); the peer's mask
        n = x.shape[0]
        flat_keep = keep.reshape(-1, *keep.shape[-2:])  # percentile-major, as the peer's noise
        diffs = torch.empty(flat_keep.shape[0])
        for s in range(0, flat_keep.shape[0], batch_size):
            rows = torch.arange(s, min(s + batch_size, flat_keep.shape[0]))
            img = rows % n
            xs = x[img.to(x.device)]
            imp = impute(xs, flat_keep[rows].to(xs.device), noise=noise,
                         generator=gen).to(xs.dtype)
            diffs[rows] = _scores(model, imp, t[img], score, batch_size) - base[img]
        curves = diffs.reshape(len(pct), n).T.numpy().astype(np.float32)
        out[kind] = curves
    return RoadResult(pct, out.get("morf"), out.get("lerf"), score)
