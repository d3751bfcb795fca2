"""``aug_smooth``: test-time augmentation of any CAM method (``eigen_smooth`` is in methods).

pytorch-grad-cam's augmentation smoothing: the map is computed on every augmented copy of the
input — horizontal flip or not × brightness ``0.9, 1, 1.1`` (its ``ttach`` default: 6 copies) —
each map is un-augmented (flipped back) and the maps are averaged.

hooklab differs in one respect, on purpose: the targets are fixed by the un-augmented input (the
predicted class of the original image, or the targets given), so all six maps explain the same
class; pytorch-grad-cam re-picks the predicted class of each augmented copy when no target is
given. With explicit targets the two agree.

:func:`hooklab.cam.engine.compute` calls :func:`aug_smooth` when ``aug_smooth=True``; the result's
``maps`` are the average min-max normalised, ``raw`` the average before that normalisation (at
the output size, like a fused multi-layer map), ``per_layer`` the average of each layer's
de-augmented, min-max normalised raw maps.

Example:
    >>> res = hooklab.cam.compute(model, x, "gradcam", layer="conv3", aug_smooth=True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from hooklab.cam.methods import minmax

__all__ = ["AUGMENTATIONS", "Augmentation", "aug_smooth"]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One test-time augmentation: an optional horizontal flip and a brightness factor.

    Attributes:
        flip: mirror the image left-right (and the map back).
        factor: multiply the input by this.
    """

    flip: bool
    factor: float

    @property
    def identity(self) -> bool:
        """Whether the augmentation leaves the input unchanged."""
        return not self.flip and self.factor == 1.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The augmented input ``(B, C, H, W)``."""
        y = x * self.factor if self.factor != 1.0 else x
        return y.flip(-1) if self.flip else y

    def undo(self, maps: torch.Tensor) -> torch.Tensor:
        """A map ``(..., h, w)`` of the augmented input, back in the original image's frame."""
        return maps.flip(-1) if self.flip else maps


#: pytorch-grad-cam's default ``tta_transforms``: ``HorizontalFlip()`` × ``Multiply([0.9, 1, 1.1])``.
AUGMENTATIONS: tuple[Augmentation, ...] = tuple(
    Augmentation(flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1))


def aug_smooth(compute_fn: Callable[..., Any], model: torch.nn.Module, x: torch.Tensor,
               method: str, layer: Any, target: Any, *,
               augmentations: tuple[Augmentation, ...] = AUGMENTATIONS, **kwargs: Any) -> Any:
    """The CAM averaged over test-time augmentations (see the module docstring).

    Args:
        compute_fn: :func:`hooklab.cam.engine.compute` (passed in, so this module does not
            import the engine that imports it).
        model, x, method, layer, target: as for ``compute``.
        augmentations: the augmented copies (the identity must be one of them).
        **kwargs: the other keywords of ``compute`` (``layers``, ``size``, ``fuse``,
            ``batch_size``, ``eigen_smooth``).

    Returns:
        A ``CamResult`` (targets, scores and logits of the un-augmented input).
    """
    if not any(a.identity for a in augmentations):
        raise ValueError("the augmentations must include the identity (no flip, factor 1)")
    base = compute_fn(model, x, method, layer, target, **kwargs)
    kwargs.pop("layers", None)
    names = list(base.layers)
    images = x if x.dim() == 4 else x[None]
    b = images.shape[0]
    k = len(base) // b
    tmat = base.targets.reshape(b, k)
    total = torch.zeros_like(base.maps)
    per_layer = {n: torch.zeros_like(r, dtype=torch.float32) for n, r in base.per_layer.items()}
    for aug in augmentations:
        if aug.identity:
            maps, raws = base.maps, base.per_layer
        else:
            z = aug.apply(images)
            res = [compute_fn(model, z, method, names if len(names) > 1 else names[0],
                              tmat[:, j], **kwargs) for j in range(k)]
            maps = aug.undo(_interleave([r.maps for r in res]))
            raws = {n: aug.undo(_interleave([r.per_layer[n] for r in res])) for n in per_layer}
        total += maps
        for n in per_layer:
            per_layer[n] += minmax(raws[n].float())
    mean = total / len(augmentations)
    return dataclasses.replace(base, maps=minmax(mean), raw=mean,
                               per_layer={n: v / len(augmentations) for n, v in per_layer.items()})


def _interleave(parts: list[torch.Tensor]) -> torch.Tensor:
    """``k`` results of ``(B, ...)`` maps (one per target) -> ``(B·k, ...)`` image-major."""
    if len(parts) == 1:
        return parts[0]
    return torch.stack(parts, dim=1).flatten(0, 1)
