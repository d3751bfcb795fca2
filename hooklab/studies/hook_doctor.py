"""The seed's leaking ``GradCAM`` class, kept verbatim to show what the hook inventory finds.

The seed (SEED_NOTES §5) registers a forward hook and a deprecated backward hook in
``register_hooks`` and drops both handles. Constructing it twice — re-running a notebook cell —
leaves four hooks on ``conv3``; the first object's hooks keep firing (and keep it alive) during
every later forward and backward. :func:`seed_gradcam_twice` runs that on a *copy* of a model,
so the caller's model is never touched, and returns :func:`hooklab.recording.inventory.hooks_on`
of the copy.

Example:
    >>> inv = seed_gradcam_twice(SimpleCNN(), torch.randn(1, 3, 32, 32))
    >>> inv[inv.module == "conv3"].looks_leaked.tolist()
    [True, True, True, True]
"""

from __future__ import annotations

import copy
import warnings

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.core.errors import LayerNotFoundError
from hooklab.core.layers import resolve_layers
from hooklab.recording.inventory import hooks_on

__all__ = ["SeedGradCAM", "seed_gradcam_twice"]


class SeedGradCAM:
    """The seed's GradCAM, verbatim in substance: its hooks are never removed (the flaw)."""

    def __init__(self, model: nn.Module, target_layer: nn.Module) -> None:
        self.model = model
        self.target_layer = target_layer
        self.gradients: torch.Tensor | None = None
        self.activations: torch.Tensor | None = None
        self.register_hooks()

    def register_hooks(self) -> None:
        def forward_hook(module, input, output):
            self.activations = output.detach()

        def backward_hook(module, grad_input, grad_output):
            self.gradients = grad_output[0].detach()

        self.target_layer.register_forward_hook(forward_hook)  # the handle is dropped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.target_layer.register_backward_hook(backward_hook)  # dropped too

    def generate_cam(self, input_image: torch.Tensor, target_class: int | None = None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model_output = self.model(input_image)
        if target_class is None:
            target_class = int(torch.argmax(model_output, dim=1).item())
        self.model.zero_grad()
        one_hot = torch.zeros_like(model_output)
        one_hot[0, target_class] = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model_output.backward(gradient=one_hot)
        assert self.gradients is not None and self.activations is not None
        weights = torch.mean(self.gradients, dim=(2, 3), keepdim=True)
        cam = F.relu(torch.sum(weights * self.activations, dim=1, keepdim=True))
        cam = F.interpolate(cam, size=tuple(input_image.shape[-2:]), mode="bilinear",
                            align_corners=False)
        cam = cam - cam.min()
        cam = cam / cam.max() if cam.max() > 0 else cam
        return cam.detach().cpu().squeeze().numpy(), target_class


def seed_gradcam_twice(model: nn.Module, x: torch.Tensor, layer: str = "conv3") -> pd.DataFrame:
    """Run the seed's ``GradCAM`` twice on a copy of ``model``; the copy's hook inventory."""
    names = resolve_layers(model, layer)  # an unknown layer: LayerNotFoundError, close names
    if len(names) != 1:
        raise LayerNotFoundError(f"{layer!r} names {len(names)} layers; the seed's GradCAM "
                                 "hooks exactly one")
    twin = copy.deepcopy(model)
    target = twin.get_submodule(names[0])
    for _ in range(2):  # the notebook cell, run twice
        SeedGradCAM(twin, target).generate_cam(x)
    return hooks_on(twin, include_global=False)
