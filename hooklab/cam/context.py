"""What a model-calling CAM method receives: :class:`CamContext`.

Most CAM methods are pure functions of a layer's activation ``A`` and gradient ``G``
(:mod:`hooklab.cam.methods`). Some need the model again: Score-CAM and its variants run masked
inputs, AblationCAM runs the network from the layer on with channels zeroed, SmoothGrad-CAM++
needs gradients on noisy copies of the input, ShapleyCAM a Hessian-vector product. Such a method
sets ``CamMethod.run`` and gets one :class:`CamContext` per layer and per set of targets from
:func:`hooklab.cam.engine.compute`. The context hides the hook work (and, for token layers, the
reshaping between the token layout and the spatial ``(B, C, h, w)`` view): a method only ever
sees spatial tensors, registers no hook itself, and leaves the model as it found it.

The model is frozen (no parameter requires grad) and in eval mode for the whole call.

Example:
    >>> def ablation_weights(ctx: CamContext) -> torch.Tensor:
    ...     base = ctx.logits(ctx.x).gather(1, ctx.targets[:, None])
    ...     a = ctx.acts[0:1].repeat(ctx.acts.shape[1], 1, 1, 1)
    ...     a[range(a.shape[0]), range(a.shape[0])] = 0        # channel k zeroed in copy k
    ...     out = ctx.with_layer_output(0, a)                   # (C, K) logits
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["CamContext"]


@dataclass
class CamContext:
    """One layer, one batch, one target per image; the model behind it.

    Attributes:
        model: the model (frozen, eval mode). Call it only through the functions below.
        x: the input batch ``(B, C, H, W)``, detached.
        layer: the target layer's name.
        acts: the layer's activation ``(B, C, h, w)`` (float32, detached; for a token layer the
            reshaped spatial view).
        grads: ``dS/dA`` of each image's target score, same shape (``None`` unless the method
            has ``needs_grad``).
        targets: ``(B,)`` target class per image.
        batch_size: how many inputs a method should send per forward (masked images, ablated
            copies, noisy samples).
        eigen_smooth: the caller asked for the first-principal-component map instead of the
            channel sum (a method that builds weighted activations honours it).
        logits_fn: see :meth:`logits`.
        replace_fn: see :meth:`with_layer_output`.
        capture_fn: see :meth:`capture`.
    """

    model: nn.Module
    x: torch.Tensor
    layer: str
    acts: torch.Tensor
    grads: torch.Tensor | None
    targets: torch.Tensor
    batch_size: int
    logits_fn: Callable[[torch.Tensor], torch.Tensor]
    replace_fn: Callable[[int, torch.Tensor], torch.Tensor]
    capture_fn: Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]]
    eigen_smooth: bool = False

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of the model on inputs ``z`` ``(N, C, H, W)``, without gradients.

        The caller batches (``batch_size`` at a time); one call is one forward.
        """
        return self.logits_fn(z)

    def with_layer_output(self, sample: int, acts: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of image ``sample`` with the layer's output replaced by each of
        ``acts`` ``(N, C, h, w)`` (spatial view), without gradients.

        The forward below the layer runs once per chunk of ``batch_size``; everything above
        it sees the replaced activation (AblationCAM zeroes channels this way).
        """
        return self.replace_fn(sample, acts)

    def capture(self, z: torch.Tensor, targets: torch.Tensor | None = None,
                create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activation ``A`` and ``dS/dA`` for inputs ``z`` (``(N, C, H, W)``).

        ``S`` is the sum over images of each one's target logit (``targets`` default to
        :attr:`targets`, which needs ``N == B``). With ``create_graph=True``, ``A`` is a leaf
        that requires grad and ``G`` keeps its graph, so a second derivative such as the
        Hessian-vector product ``autograd.grad(G, A, grad_outputs=A)`` can be taken
        (ShapleyCAM); otherwise both come back detached.
        """
        t = self.targets if targets is None else targets
        return self.capture_fn(z, t, create_graph)
