"""The memory format of a CAM's captured pass.

oneDNN's CPU convolutions (and cuDNN's) run faster on channels-last tensors than on the default
contiguous NCHW: they skip a reorder before and after every convolution, in the forward and in
the input-gradient backward alike. ResNet-18, batch 16, 224 px on 2 CPU cores: one no-grad
forward 0.82x as long, a forward plus the backward to ``layer1`` 0.84x
(``benchmarks/bench_cam.py --only many`` prints both layouts). The values are the same up to
float32 rounding (convolutions add in another order).

``"auto"`` (the default of :func:`hooklab.cam.compute`) uses channels-last for torchvision's
CNNs (ResNet, DenseNet, VGG, EfficientNet, MobileNet, ...): their forwards only ``flatten`` or
``reshape`` after the convolutions, which works in any layout. Any other model keeps the
caller's layout: a model that calls ``.view()`` on a convolution's output (the seed's
SimpleCNN does) cannot take a channels-last tensor, and a ViT has a single patch convolution.

Example:
    >>> pass_input(torchvision.models.resnet18(), x, "auto").is_contiguous(
    ...     memory_format=torch.channels_last)
    True
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MEMORY_FORMATS", "channels_last_cnn", "pass_input", "view_error"]

#: Values of ``memory_format``.
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


def channels_last_cnn(model: nn.Module) -> bool:
    """Is ``model`` a torchvision CNN (at least two ``Conv2d``; torchvision's own class)?"""
    if not type(model).__module__.startswith("torchvision.models"):
        return False
    convs = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            convs += 1
            if convs >= 2:
                return True
    return False


def pass_input(model: nn.Module, x: torch.Tensor, memory_format: str) -> torch.Tensor:
    """``x`` in the memory format of the captured pass (see the module docstring);
    ``memory_format`` is one of :data:`MEMORY_FORMATS` (the caller checks)."""
    if x.dim() != 4:
        return x
    if memory_format == "channels_last" or (memory_format == "auto" and channels_last_cnn(model)):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def view_error(exc: RuntimeError, x: torch.Tensor) -> str | None:
    """The message for a model that cannot take a channels-last input, else ``None``."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous() and "view" in str(exc):
        return (f"the model cannot take a channels-last input ({exc}); call with "
                "memory_format='contiguous'")
    return None
