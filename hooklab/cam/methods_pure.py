"""CAM methods that are pure functions of ``A`` and ``G``: EigenGradCAM, GradCAMElementWise, KPCA-CAM.

Same conventions as :mod:`hooklab.cam.methods`: activations ``A`` ``(B, C, h, w)``, gradients
``G = dS/dA`` (same shape), raw map ``(B, h, w)`` after the final ReLU.

==================== ===========================================================================
eigengradcam         ``L = ReLU(M v₁)`` with ``M`` the ``(h·w, C)`` matrix of ``G ⊙ A`` centred
                     over positions, ``v₁`` its first right singular vector (EigenCAM on the
                     gradient-weighted activations; pytorch-grad-cam's EigenGradCAM)
gradcamelementwise   ``L = ReLU(Σ_c ReLU(G_c ⊙ A_c))`` (pytorch-grad-cam's GradCAMElementWise:
                     HiResCAM with the ReLU before the channel sum)
kpcacam              ``L = ReLU(√λ₁ u₁)`` with ``u₁, λ₁`` the top eigenpair of the centred kernel
                     matrix ``K̃ = K - 1K - K1 + 1K1`` of the positions' centred activation
                     vectors (Karmani et al. 2024, KPCA-CAM); ``K_ij = tanh(γ aᵢ·aⱼ + 1)``
                     (``"sigmoid"``, pytorch-grad-cam's default) or ``exp(-γ |aᵢ - aⱼ|²)``
                     (``"rbf"``), ``γ = 1/C`` (scikit-learn's default)
==================== ===========================================================================

The sign of a principal component is arbitrary; as in :func:`hooklab.cam.methods.eigencam`, it is
chosen so that the projection has positive skew.

Example:
    >>> raw = eigengradcam(acts, grads)          # (B, h, w)
    >>> raw = kpcacam(acts, kernel="rbf")
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hooklab.cam.eig import top_component
from hooklab.cam.methods import CamMethod, eigencam, positive_skew_map, register

__all__ = ["eigengradcam", "gradcamelementwise", "kpcacam", "kernel_matrix", "KPCA_KERNEL"]

#: kernel of :func:`kpcacam` when called through the registry (pytorch-grad-cam's default).
KPCA_KERNEL = "sigmoid"


def eigengradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """EigenGradCAM: EigenCAM's first-principal-component projection of ``G ⊙ A``.

    ``L = ReLU(M v₁)``, ``M`` = ``G ⊙ A`` as ``(h·w, C)`` centred over positions. Class-specific
    through ``G``. (pytorch-grad-cam 1.5.7 ``EigenGradCAM``; sign by positive skew.)
    """
    return eigencam(grads * acts)


def gradcamelementwise(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM element-wise: ``L = ReLU(Σ_c ReLU(G_c ⊙ A_c))`` (pytorch-grad-cam 1.5.7)."""
    return F.relu(F.relu(grads * acts).sum(dim=1))


def kernel_matrix(m: torch.Tensor, kernel: str, gamma: float) -> torch.Tensor:
    """Kernel matrix ``(B, n, n)`` of the rows of ``m`` ``(B, n, C)``.

    ``"sigmoid"``: ``tanh(γ xᵢ·xⱼ + 1)``; ``"rbf"``: ``exp(-γ |xᵢ - xⱼ|²)``;
    ``"linear"``: ``xᵢ·xⱼ`` (then KPCA is EigenCAM).

    Raises:
        ValueError: unknown kernel.
    """
    gram = m @ m.transpose(1, 2)
    if kernel == "sigmoid":
        return torch.tanh(gamma * gram + 1.0)
    if kernel == "rbf":
        sq = gram.diagonal(dim1=1, dim2=2)
        dist = (sq[:, :, None] + sq[:, None, :] - 2 * gram).clamp(min=0)
        return torch.exp(-gamma * dist)
    if kernel == "linear":
        return gram
    raise ValueError(f"unknown KPCA kernel {kernel!r}; use 'sigmoid', 'rbf' or 'linear'")


def kpcacam(acts: torch.Tensor, grads: torch.Tensor | None = None, *, kernel: str | None = None,
            gamma: float | None = None) -> torch.Tensor:
    """KPCA-CAM: the first kernel principal component of the positions' activation vectors.

    For each sample: ``a_p`` = the ``C``-vector at position ``p``, centred over positions;
    ``K`` = the kernel matrix ``(h·w, h·w)``; ``K̃ = K - 1K - K1 + 1K1`` (``1`` the matrix of
    ``1/(h·w)``); ``u₁, λ₁`` its top eigenpair; ``L = ReLU(√λ₁ u₁)`` (scikit-learn's
    ``KernelPCA(n_components=1).fit_transform``, which pytorch-grad-cam 1.5.7's ``KPCA_CAM``
    calls), signed to positive skew. Class-agnostic. Computed in float64.

    Args:
        acts: ``(B, C, h, w)``.
        grads: unused (the registry's signature).
        kernel: ``"sigmoid"`` (default, :data:`KPCA_KERNEL`), ``"rbf"`` or ``"linear"``.
        gamma: kernel width; ``1/C`` by default.
    """
    b, c, h, w = acts.shape
    kernel = KPCA_KERNEL if kernel is None else kernel
    gamma = 1.0 / c if gamma is None else float(gamma)
    m = torch.nan_to_num(acts, nan=0.0).reshape(b, c, h * w).transpose(1, 2).double()
    m = m - m.mean(dim=1, keepdim=True)
    k = kernel_matrix(m, kernel, gamma)
    k = k - k.mean(dim=1, keepdim=True) - k.mean(dim=2, keepdim=True) + k.mean(dim=(1, 2),
                                                                            keepdim=True)
    return positive_skew_map(top_component((k + k.transpose(1, 2)) / 2), acts)


register(CamMethod("eigengradcam", eigengradcam, True, True, "EigenGradCAM",
                   "pytorch-grad-cam (Gildenblat et al.); EigenCAM of G⊙A"))
register(CamMethod("gradcamelementwise", gradcamelementwise, True, True, "Grad-CAM element-wise",
                   "pytorch-grad-cam (Gildenblat et al.)",
                   weighted=lambda a, g: F.relu(g * a)), "elementwise")
register(CamMethod("kpcacam", kpcacam, False, False, "KPCA-CAM",
                   "Karmani et al., 2024"), "kpca")
