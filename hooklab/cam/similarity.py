"""How alike two saliency maps are: Spearman rank correlation and SSIM, batched, in torch.

Both take two batches of maps ``(N, H, W)`` (or one pair ``(H, W)``) and return one value per
pair, ``(N,)`` float32.

* **Spearman rank correlation** (as ``scipy.stats.spearmanr`` on the flattened maps): the
  Pearson correlation of the pixels' ranks, ties given their average rank. A constant map has
  no ranking: its correlation is NaN, as in SciPy.
* **SSIM** (Wang et al. 2004, "Image quality assessment: from error visibility to structural
  similarity") with scikit-image's settings for float images in [0, 1] with
  ``gaussian_weights=True``: ``data_range = 1``, a Gaussian window of σ = 1.5 truncated at
  3.5 σ (11 × 11 px), ``K1 = 0.01``, ``K2 = 0.03``, population (not sample) covariances, and
  the mean of the SSIM map over the pixels whose window lies inside the image (5 px from each
  border are left out; the padding mode therefore plays no part)::

      SSIM = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2)),
      C1 = (K1 · R)², C2 = (K2 · R)²,  R = data_range

  Maps must be at least 11 × 11 px (a CAM at the input's size is; resize a raw layer-size map).

Example:
    >>> spearman(res_a.maps, res_b.maps)     # (N,), 1.0 for maps ranked alike
    >>> ssim(res_a.maps, res_b.maps)         # (N,), 1.0 for identical maps
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hooklab.core.errors import HooklabError

__all__ = ["SimilarityError", "spearman", "ssim", "average_ranks", "SSIM_SIGMA", "SSIM_WINDOW"]

#: SSIM's Gaussian σ in pixels (Wang et al. 2004; scikit-image's ``sigma``).
SSIM_SIGMA = 1.5
#: SSIM's window side in pixels: ``2 · int(3.5 σ + 0.5) + 1`` (scikit-image's truncation).
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1


class SimilarityError(HooklabError, ValueError):
    """Two batches of maps that cannot be compared (shapes differ, too small, not maps)."""


def _pair(a: torch.Tensor, b: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise SimilarityError(f"{what} compares two tensors, got {type(a).__name__} and "
                              f"{type(b).__name__}")
    if a.shape != b.shape:
        raise SimilarityError(f"{what}: maps of shape {tuple(a.shape)} and {tuple(b.shape)} "
                              "differ; give two batches (N, H, W) of the same size (resize "
                              "one, e.g. hooklab.cam.resize, or compare CamResult.maps)")
    if a.dim() == 2:
        a, b = a[None], b[None]
    if a.dim() != 3 or a.shape[0] == 0:
        raise SimilarityError(f"{what} needs maps (N, H, W) or one map (H, W), got shape "
                              f"{tuple(a.shape)}")
    return a.detach().double(), b.detach().to(a.device).double()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..M`` of each row of ``values`` ``(N, M)``; tied values share their mean rank."""
    s = values.sort(dim=1).values.contiguous()
    v = values.contiguous()
    first = torch.searchsorted(s, v, right=False)  # 0-based position of the first equal value
    last = torch.searchsorted(s, v, right=True)    # one past the last equal value
    return (first + last + 1).double() / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (flattened), ``(N,)``.

    Equals ``scipy.stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic``; NaN where a map
    is constant.

    Raises:
        SimilarityError: the batches differ in shape or are not maps.
    """
    a, b = _pair(a, b, "spearman")
    ra = average_ranks(a.flatten(1))
    rb = average_ranks(b.flatten(1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    num = (ra * rb).sum(dim=1)
    den = torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    out = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                      torch.full_like(den, math.nan))
    return out.clamp(-1, 1).float()


def _gauss(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(3.5 * sigma + 0.5)  # scipy.ndimage.gaussian_filter's truncate=3.5
    k = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-(k ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _filter(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian, 'valid' region only: ``(B, 1, H, W)`` -> ``(B, 1, H-2r, W-2r)``."""
    y = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0,
         sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean structural similarity of each pair of maps, ``(N,)`` (see the module docstring).

    Args:
        a, b: maps ``(N, H, W)`` (or ``(H, W)``), values in ``[0, data_range]``.
        data_range: the value range ``R`` (1 for CAM maps).
        sigma: the Gaussian window's σ (window side ``2 · int(3.5 σ + 0.5) + 1``).

    Raises:
        SimilarityError: shapes differ, or a map is smaller than the window.
    """
    a, b = _pair(a, b, "ssim")
    k = _gauss(float(sigma), a.dtype, a.device)
    side = k.numel()
    if a.shape[-1] < side or a.shape[-2] < side:
        raise SimilarityError(f"ssim needs maps of at least {side}x{side} px (the Gaussian "
                              f"window, sigma={sigma:g}), got {tuple(a.shape[-2:])}; compare "
                              "maps at the input's size (CamResult.maps)")
    if not data_range > 0:
        raise SimilarityError(f"data_range must be positive, got {data_range!r}")
    x, y = a[:, None], b[:, None]
    mx, my = _filter(x, k), _filter(y, k)
    vx = _filter(x * x, k) - mx * mx
    vy = _filter(y * y, k) - my * my
    vxy = _filter(x * y, k) - mx * my
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).float()
