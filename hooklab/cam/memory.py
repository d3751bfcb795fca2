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

**Attention.** A batch-first ``nn.MultiheadAttention`` that must keep a graph (above a captured
layer) leaves its fused fast path for ``F.multi_head_attention_forward``, which transposes the
tokens to sequence-first and runs the input projection on that strided view as one small matmul
per token (ViT-B/16, batch 8: 197 matmuls of 8 × 768 by 768 × 2304, 100 ms where one 1576-row
matmul takes 45 ms; the same again in the backward). :func:`mha_sequence_first` hands such an
attention its tokens stored sequence-first, so the transpose is contiguous and the projection is
one matmul; the values are the same.

Example:
    >>> pass_input(torchvision.models.resnet18(), x, "auto").is_contiguous(
    ...     memory_format=torch.channels_last)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["MEMORY_FORMATS", "channels_last_cnn", "mha_sequence_first", "pass_input",
           "view_error"]

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


def mha_sequence_first(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                       ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Forward pre-hook (``with_kwargs=True``) for a batch-first ``nn.MultiheadAttention``:
    self-attention tokens ``(B, T, D)`` that need a graph are handed over stored sequence-first
    (see the module docstring); anything else is left alone."""
    if not (args and torch.is_grad_enabled() and getattr(module, "batch_first", False)):
        return None
    q = args[0]
    if not (isinstance(q, torch.Tensor) and q.dim() == 3 and q.requires_grad
            and len(args) >= 3 and q is args[1] is args[2]):
        return None
    t = q.transpose(0, 1).contiguous().transpose(0, 1)
    return (t, t, t, *args[3:]), kwargs
