"""The seed's examples as backward graphs with their hooks (the Hook basics page draws them).

Each example is the seed's model and input (SEED_NOTES §2-§5) recorded once by
:func:`hooklab.recording.graph.module_graph`, or for the tensor example
(``y = x**2; z = y**3`` with the halving hook on ``y``) :func:`tensor_graph`.

Example:
    >>> g = example_graph("simple_cnn", edits="conv2=scale(0.5)")
    >>> [(h.order, h.kind, h.layer) for h in g.numbered()][:2]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from hooklab.core.edits import EditsArg
from hooklab.core.errors import HooklabError
from hooklab.models.zoo import SimpleCNN, seed_model
from hooklab.recording.graph import BackwardGraph, module_graph, tensor_graph

__all__ = ["EXAMPLES", "example_graph", "resnet_block", "seed_tensor_graph"]

#: name -> (English title, Chinese title)
EXAMPLES: dict[str, tuple[str, str]] = {
    "tensor": ("y = x**2; z = y**3, tensor hook on y", "y = x**2; z = y**3，y 上的张量钩子"),
    "simple_model": ("the seed's SimpleModel", "课程的 SimpleModel"),
    "simple_cnn": ("the seed's SimpleCNN", "课程的 SimpleCNN"),
    "resnet_block": ("one ResNet BasicBlock (torchvision)", "一个 ResNet BasicBlock（torchvision）"),
}

#: The layers each model example records by default.
DEFAULT_LAYERS: dict[str, list[str]] = {
    "simple_model": ["conv", "fc"],
    "simple_cnn": ["conv1", "conv2", "conv3"],
    "resnet_block": ["conv1", "bn1", "conv2", "bn2"],
}


def resnet_block(seed: int = 0) -> nn.Module:
    """torchvision's ``BasicBlock(16, 16)`` (``ReLU(inplace=True)`` included), in eval mode."""
    from torchvision.models.resnet import BasicBlock

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return BasicBlock(16, 16).eval()
    finally:
        torch.random.set_rng_state(state)


def seed_tensor_graph(k: float = 0.5) -> BackwardGraph:
    """The seed's tensor hook: ``x = 2``, ``y = x**2``, ``z = y**3``, hook on ``y`` scaling by k."""
    x = torch.tensor([2.0], requires_grad=True)
    y = x ** 2
    z = y ** 3

    def tensor_hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * k

    handle = y.register_hook(tensor_hook)
    try:
        g = tensor_graph(z, {"x": x, "y": y, "z": z},
                         title=f"z = (x**2)**3, hook on y: grad * {k:g}")
        z.backward()
    finally:
        handle.remove()
    # one hook, and it fired: it is number 1; it returns grad * k, the edit scale(k)
    g.hooks = [replace(h, order=1, edit=f"scale({k:g})") for h in g.hooks]
    return g


def _model_and_input(name: str) -> tuple[nn.Module, torch.Tensor, Any]:
    state = torch.random.get_rng_state()
    try:
        if name == "simple_model":
            model = seed_model(42)
            torch.manual_seed(42)
            return model, torch.randn(1, 1, 4, 4), "sum"
        torch.manual_seed(0)
        if name == "simple_cnn":
            return SimpleCNN().eval(), torch.randn(1, 3, 32, 32), None
        if name == "resnet_block":
            return resnet_block(), torch.randn(1, 16, 8, 8), "sum"
    finally:
        torch.random.set_rng_state(state)
    raise HooklabError(f"unknown graph example {name!r}; known: {', '.join(EXAMPLES)}")


def example_graph(name: str, *, layers: Iterable[str] | None = None,
                  hooks: dict[str, list[str]] | None = None, edits: EditsArg = None,
                  k: float = 0.5, input_grads: bool = False,
                  param_grads: bool = False) -> BackwardGraph:
    """The backward graph of one of :data:`EXAMPLES`, with the recorder's hooks numbered.

    Args:
        name: a key of :data:`EXAMPLES`.
        layers: layers to record (default :data:`DEFAULT_LAYERS`).
        hooks: exploration hook kinds per layer, as :func:`hooklab.record`.
        edits: gradient edits, as :func:`hooklab.record` (``"conv2=scale(0.5)"``).
        k: the factor of the tensor example's hook.
        input_grads, param_grads: as :func:`hooklab.record`.

    Raises:
        HooklabError: an unknown example (and the recorder's errors for bad layers/kinds).
    """
    if name == "tensor":
        return seed_tensor_graph(k)
    model, x, target = _model_and_input(name)
    chosen = list(layers) if layers is not None else DEFAULT_LAYERS[name]
    return module_graph(model, x, chosen, hooks=hooks, edits=edits, target=target,
                        input_grads=input_grads, param_grads=param_grads,
                        title=EXAMPLES[name][0])
