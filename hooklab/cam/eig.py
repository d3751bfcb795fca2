"""The top eigenpair of a batch of symmetric matrices: :func:`top_eigenpair`.

EigenCAM, ``eigen_smooth`` and KPCA-CAM need only the first principal component, but
``torch.linalg.eigh`` computes every eigenvector. LAPACK's ``dsyevr`` (through
``scipy.linalg.eigh(subset_by_index=...)``) reduces to tridiagonal form once and then finds the
one wanted eigenvector by bisection and inverse iteration: the same float64 result (to ~1e-14)
in a third of the time for the 196×196 Gram matrices of a ResNet-18's ``layer3`` (benchmarks:
``bench_cam.py --only many``, where EigenCAM's four ``eigh`` calls were the largest cost of
the 24 maps after the pass itself).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.linalg
import threadpoolctl
import torch


@functools.cache
def _blas() -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()


def top_eigenpair(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest eigenvalue ``(B,)`` and its unit eigenvector ``(B, n)`` of each symmetric ``k[i]``.

    ``k``: ``(B, n, n)``, computed in float64 on the CPU and returned on ``k``'s device and
    dtype. A matrix with a NaN or an infinity gets NaN for both (LAPACK would not converge):
    the map is then NaN and the CAM doctor names the cause. The eigenvector's sign is
    LAPACK's (arbitrary); callers fix it.
    """
    b, n, _ = k.shape
    kk = k.detach().to("cpu", torch.float64).numpy()
    vals = np.full(b, np.nan)
    vecs = np.full((b, n), np.nan)
    # scipy's own OpenBLAS threads would compete with torch's OpenMP threads (each pool spins
    # while the other works: every later torch op ran slower); one thread each, run serially.
    with _blas().limit(limits=1, user_api="blas"):
        for i in range(b):
            if n and np.isfinite(kk[i]).all():
                w, v = scipy.linalg.eigh(kk[i], subset_by_index=[n - 1, n - 1], driver="evr",
                                         check_finite=False)
                vals[i], vecs[i] = w[0], v[:, 0]
    return (torch.from_numpy(vals).to(k.device, k.dtype),
            torch.from_numpy(vecs).to(k.device, k.dtype))


def top_component(k: torch.Tensor) -> torch.Tensor:
    """``σ₁ u₁`` ``(B, n)`` for Gram matrices ``k = M Mᵀ``: the projection ``M v₁`` of ``M`` on
    its first right singular vector (``√λ₁`` times the top eigenvector; sign arbitrary)."""
    val, vec = top_eigenpair(k)
    return vec * val[:, None].clamp(min=0).sqrt()
