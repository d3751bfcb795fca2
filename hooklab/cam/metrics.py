"""Faithfulness and localisation metrics for saliency maps, each beside a random-map baseline.

All functions take maps ``(N, H, W)`` in [0, 1] (e.g. ``CamResult.maps``), the images ``x``
``(N, C, H, W)`` in the model's input space and one target class per map. A model's
*confidence* is the softmax probability of the target class.

* **Average Drop / Increase in Confidence** (Grad-CAM++, Chattopadhyay et al. 2018): with ``Y``
  the confidence on the image and ``O`` the confidence on the *explanation map*
  ``E = L ⊙ x`` (the image multiplied pixel-wise by the map)::

      AD = 100 · mean_i max(0, Y_i − O_i) / Y_i        (lower is better)
      IC = 100 · mean_i [Y_i < O_i]                    (higher is better)

* **Deletion / insertion AUC** (RISE, Petsiuk et al. 2018): pixels are ranked by saliency
  (ties broken at random, seeded); in ``steps`` equal steps the most salient pixels are replaced
  by a baseline (deletion) or copied from the image onto the baseline (insertion); the area
  under the confidence curve over the fraction of pixels (trapezoid rule, x in [0, 1]) is the
  score. Deletion: lower is better; insertion: higher is better. Baselines (in the model's
  input space): ``"zero"`` (for the seed's normalisation, mid-grey), ``"blur"`` (Gaussian blur,
  σ = H/16 px), ``"mean"`` (each image's channel mean). RISE's defaults: zero for deletion,
  blur for insertion.

* **Pointing game** (Zhang et al. 2016): a hit when the map's maximum lies inside the object
  mask, or within ``tolerance`` pixels of it (Euclidean; the paper uses 15 px at 224 px, about
  2 px at 32 px). When several pixels tie for the maximum (e.g. an all-zero map), the hit is the
  fraction of them inside the mask, so a constant map scores the mask's area, like a random
  point.

* **Random baseline**: :func:`random_maps` draws seeded uniform noise at a low resolution
  (default ``H/8 × W/8``, like a CAM of the last conv) and resizes it bilinearly, normalised
  like a CAM; every metric is reported for these maps too.

Example:
    >>> res = hooklab.cam.engine.compute(model, x)
    >>> table = evaluate(model, x, res.maps, res.targets, masks=masks)
    >>> table["cam"]["pointing"], table["random"]["pointing"]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.cam import engine as cam
from hooklab.cam.methods import minmax
from hooklab.core.errors import HooklabError
from hooklab.core.modes import eval_mode

log = logging.getLogger(__name__)

__all__ = ["MetricError", "confidence", "average_drop_increase", "deletion_insertion",
           "DeletionInsertion", "pointing_game", "max_in_mask", "random_maps", "evaluate",
           "evaluate_with_curves", "compare_methods", "blur", "curve_auc"]


class MetricError(HooklabError, ValueError):
    """Maps, images, masks or targets do not fit together."""


def _check(x: torch.Tensor, maps: torch.Tensor, targets: Any) -> torch.Tensor:
    if x.dim() != 4 or maps.dim() != 3:
        raise MetricError(f"need images (N, C, H, W) and maps (N, H, W), got {tuple(x.shape)} "
                          f"and {tuple(maps.shape)}")
    if x.shape[0] != maps.shape[0] or x.shape[-2:] != maps.shape[-2:]:
        raise MetricError(f"images {tuple(x.shape)} and maps {tuple(maps.shape)} differ in "
                          "number or size (resize the maps to the input size)")
    t = torch.as_tensor(targets, device=x.device).long().reshape(-1)
    if t.numel() == 1 and x.shape[0] > 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise MetricError(f"{t.numel()} targets for {x.shape[0]} maps")
    return t


@torch.no_grad()
def confidence(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
               batch_size: int = 512) -> torch.Tensor:
    """Softmax probability of each image's target class, in eval mode (restored), batched."""
    out = []
    with eval_mode(model):
        for s in range(0, x.shape[0], batch_size):
            logits = model(x[s:s + batch_size])
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            out.append(torch.softmax(logits.float(), dim=1)
                       .gather(1, targets[s:s + batch_size, None].to(logits.device))[:, 0])
    return torch.cat(out) if out else torch.empty(0)


def average_drop_increase(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: Any,
                          *, batch_size: int = 512) -> tuple[float, float]:
    """Average Drop (%) and Increase in Confidence (%) of the explanation maps ``maps ⊙ x``.

    ``AD = 100 · mean(max(0, Y − O) / Y)``, ``IC = 100 · mean(Y < O)``.

    Example:
        >>> ad, ic = average_drop_increase(model, x, res.maps, res.targets)
    """
    t = _check(x, maps, targets)
    y = confidence(model, x, t, batch_size)
    o = confidence(model, x * maps[:, None].to(x.dtype), t, batch_size)
    ad = (torch.clamp(y - o, min=0) / y.clamp(min=1e-12)).mean().item() * 100
    ic = (y < o).float().mean().item() * 100
    return ad, ic


def blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur per channel (reflect padding); σ = H/16 px by default."""
    sigma = float(sigma if sigma is not None else max(1.0, x.shape[-2] / 16))
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(k ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _baseline(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "blur":
        return blur(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    raise MetricError(f"unknown baseline {kind!r}; use 'zero', 'blur' or 'mean'")


def _ranks(maps: torch.Tensor, seed: int) -> torch.Tensor:
    """Rank of each pixel by descending saliency (0 = most salient); ties broken at random."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1).float()
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(flat.shape[1], generator=g).to(flat.device)
    order = perm[torch.argsort(flat[:, perm], dim=1, descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand(n, -1))
    return ranks.reshape(maps.shape)


@dataclass
class DeletionInsertion:
    """Deletion and insertion curves and their areas.

    Attributes:
        fractions: ``(steps + 1,)`` fraction of pixels removed / inserted.
        deletion: ``(N, steps + 1)`` confidence per map as pixels are deleted.
        insertion: ``(N, steps + 1)`` confidence per map as pixels are inserted.
        deletion_auc: mean area under the deletion curves (lower is better).
        insertion_auc: mean area under the insertion curves (higher is better).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float

    def mean_curves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fractions, mean deletion curve, mean insertion curve)`` for plotting."""
        return self.fractions, self.deletion.mean(0), self.insertion.mean(0)


def curve_auc(fr: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Trapezoidal area under curves ``y`` (last axis) sampled at the fractions ``fr``: a
    deletion or insertion AUC per image (:class:`DeletionInsertion` holds their means).

    Example:
        >>> float(curve_auc(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.5, 0.0])))
        0.5
    """
    return ((fr[1:] - fr[:-1]) * (y[..., 1:] + y[..., :-1]) / 2).sum(-1)


@torch.no_grad()
def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: Any, *,
                       steps: int = 32, deletion_baseline: str = "zero",
                       insertion_baseline: str = "blur", batch_size: int = 512,
                       seed: int = 0) -> DeletionInsertion:
    """RISE deletion and insertion curves, all ``N · (steps + 1)`` images batched.

    At step ``s`` the ``round(s · H·W / steps)`` most salient pixels are set to the deletion
    baseline (deletion), or copied from the image onto the insertion baseline (insertion).

    Example:
        >>> di = deletion_insertion(model, x, res.maps, res.targets, steps=16)
        >>> di.deletion_auc, di.insertion_auc
    """
    t = _check(x, maps, targets)
    if steps < 1:
        raise MetricError(f"steps must be at least 1, got {steps}")
    n, _, h, w = x.shape
    ranks = _ranks(maps, seed).to(x.device)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * (h * w) / steps).long()
    fractions = (counts.double() / (h * w)).numpy()
    curves = {}
    for name, base_kind in (("deletion", deletion_baseline), ("insertion", insertion_baseline)):
        base = _baseline(x, base_kind)
        scores = torch.empty(n, steps + 1)
        pairs = [(i, s) for i in range(n) for s in range(steps + 1)]
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            idx = torch.tensor([i for i, _ in chunk], device=x.device)
            k = counts[[s for _, s in chunk]].to(x.device)
            top = (ranks[idx] < k[:, None, None])[:, None]  # the k most salient pixels
            if name == "deletion":
                imgs = torch.where(top, base[idx], x[idx])
            else:
                imgs = torch.where(top, x[idx], base[idx])
            conf = confidence(model, imgs, t[idx], batch_size=batch_size).cpu()
            for (i, s), c in zip(chunk, conf.tolist(), strict=True):
                scores[i, s] = c
        curves[name] = scores.numpy()
    return DeletionInsertion(fractions, curves["deletion"], curves["insertion"],
                             float(curve_auc(fractions, curves["deletion"]).mean()),
                             float(curve_auc(fractions, curves["insertion"]).mean()))


def _dilate(masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    r = int(math.floor(tolerance))
    if r <= 0:
        return masks.bool()
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disc = ((yy ** 2 + xx ** 2) <= tolerance ** 2).float().to(masks.device)
    out = F.conv2d(masks.float()[:, None], disc[None, None], padding=r)[:, 0]
    return out > 0


def max_in_mask(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 0.0,
                atol: float = 1e-6) -> torch.Tensor:
    """Per map: the fraction of its maximal pixels (within ``atol`` of the max) in the mask.

    The mask is first dilated by a disc of radius ``tolerance`` pixels. For a unique maximum
    this is 1.0 (hit) or 0.0 (miss).
    """
    if maps.shape != masks.shape:
        raise MetricError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ")
    m = maps.float()
    top = m >= m.amax(dim=(-2, -1), keepdim=True) - atol
    inside = _dilate(masks.to(m.device), tolerance)
    return (top & inside).sum(dim=(-2, -1)).float() / top.sum(dim=(-2, -1)).float()


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 0.0) -> float:
    """Pointing-game accuracy: mean of :func:`max_in_mask` (hit when the maximum is in the mask).

    Example:
        >>> pointing_game(res.maps, data.masks[:len(res)])        # 1.0: every maximum on the object
    """
    return float(max_in_mask(maps, masks, tolerance).mean())


def random_maps(n: int, size: tuple[int, int], seed: int = 0,
                low_res: tuple[int, int] | None = None) -> torch.Tensor:
    """Seeded random saliency maps ``(n, H, W)`` in [0, 1]: uniform noise at ``low_res``
    (default ``H/8 × W/8``), resized bilinearly and min-max normalised, like a CAM."""
    h, w = size
    lh, lw = low_res if low_res is not None else (max(2, h // 8), max(2, w // 8))
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.rand(n, 1, lh, lw, generator=g)
    up = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return minmax(up)


def evaluate(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: Any,
             masks: torch.Tensor | None = None, *, random_baseline: bool = True,
             steps: int = 32, tolerance: float | Sequence[float] = 0.0, seed: int = 0,
             batch_size: int = 512) -> dict[str, dict[str, float]]:
    """Every metric for ``maps`` and, beside it, for seeded random maps.

    Returns:
        ``{"cam": {...}, "random": {...}}`` with keys ``average_drop``, ``increase_confidence``,
        ``deletion_auc``, ``insertion_auc`` and, given ``masks``, ``pointing`` (at the first
        tolerance) and ``pointing@{t}px`` for each further tolerance ``t``.
    """
    return evaluate_with_curves(model, x, maps, targets, masks, random_baseline=random_baseline,
                                steps=steps, tolerance=tolerance, seed=seed,
                                batch_size=batch_size)[0]


def evaluate_with_curves(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: Any,
                         masks: torch.Tensor | None = None, *, random_baseline: bool = True,
                         steps: int = 32, tolerance: float | Sequence[float] = 0.0,
                         seed: int = 0, batch_size: int = 512
                         ) -> tuple[dict[str, dict[str, float]], dict[str, DeletionInsertion]]:
    """:func:`evaluate`'s rows and, per row, its deletion / insertion curves (for a chart)."""
    tols = ([float(tolerance)] if isinstance(tolerance, (int, float))
            else [float(t) for t in tolerance])
    rows = {"cam": maps}
    if random_baseline:
        rows["random"] = random_maps(maps.shape[0], (maps.shape[-2], maps.shape[-1]),
                                     seed=seed).to(maps.device)
    out: dict[str, dict[str, float]] = {}
    curves: dict[str, DeletionInsertion] = {}
    for name, m in rows.items():
        ad, ic = average_drop_increase(model, x, m, targets, batch_size=batch_size)
        di = deletion_insertion(model, x, m, targets, steps=steps, batch_size=batch_size,
                                seed=seed)
        row = {"average_drop": ad, "increase_confidence": ic, "deletion_auc": di.deletion_auc,
               "insertion_auc": di.insertion_auc}
        if masks is not None:
            for j, tol in enumerate(tols):
                row["pointing" if j == 0 else f"pointing@{tol:g}px"] = pointing_game(m, masks, tol)
        out[name] = row
        curves[name] = di
    return out, curves


def compare_methods(model: nn.Module, x: torch.Tensor, masks: torch.Tensor | None = None, *,
                    methods: Sequence[str] | None = None, layer: Any = None, target: Any = None,
                    steps: int = 32, tolerance: float | Sequence[float] = 0.0, seed: int = 0,
                    batch_size: int = 512) -> Any:
    """A table (pandas DataFrame, one row per method plus ``"random"``) of every metric.

    Targets are each image's predicted class unless given. Columns: ``method``, ``pointing``
    (with masks), ``average_drop``, ``increase_confidence``, ``deletion_auc``,
    ``insertion_auc``, ``seconds`` (time to compute the maps); with several tolerances, also
    ``pointing@{t}px``. With ``methods=None`` (the whole registry) a method the model cannot
    have is left out (logged); named methods raise.
    """
    names = list(methods) if methods is not None else list(cam.METHODS)
    rows = []
    targets = None
    for name in names:
        start = time.perf_counter()
        try:
            res = cam.compute(model, x, method=name, layer=layer, target=target)
        except HooklabError as exc:
            if methods is not None:  # asked for by name: the caller hears why
                raise
            # a registry method this model cannot have (CAM without a pooling + Linear head,
            # attention methods on a CNN): skipped, said in the log
            log.warning("compare_methods: %s skipped: %s", name, exc)
            continue
        secs = time.perf_counter() - start
        targets, xs = res.targets, x[res.sample]
        ms = masks[res.sample] if masks is not None else None
        row = evaluate(model, xs, res.maps, res.targets, ms, random_baseline=False,
                       steps=steps, tolerance=tolerance, seed=seed, batch_size=batch_size)["cam"]
        rows.append({"method": name, **row, "seconds": secs})
    if targets is not None:
        rnd = random_maps(xs.shape[0], (x.shape[-2], x.shape[-1]), seed=seed).to(x.device)
        row = evaluate(model, xs, rnd, targets, ms, random_baseline=False, steps=steps,
                       tolerance=tolerance, seed=seed, batch_size=batch_size)["cam"]
        rows.append({"method": "random", **row, "seconds": float("nan")})
    return pd.DataFrame(rows)
