"""The one save/restore of a model's run state: train/eval mode and ``requires_grad``.

A shared model (the dashboard caches one per session group) must come out of every call
exactly as it went in, even when the call raises.

Example:
    >>> with eval_mode(model):
    ...     preds = model(x).argmax(1)        # dropout/batch-norm in eval mode
    >>> with frozen(model):
    ...     out = model(x)                    # also no weight gradients, no graph below a leaf
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode", "frozen"]


@contextlib.contextmanager
def eval_mode(model: nn.Module, *, freeze: bool = False) -> Iterator[nn.Module]:
    """``model.eval()`` for the block; every module's ``training`` flag restored exactly on exit.

    Args:
        model: any module (each submodule's own flag is saved, so a model that was partly in
            eval mode comes back the same).
        freeze: also set ``requires_grad=False`` on every parameter, restored on exit.

    Yields:
        ``model``.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters()) if freeze else []
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def frozen(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter, restored exactly on exit.

    Example:
        >>> with frozen(model):
        ...     out = model(x)     # no weight gradients, no graph below a captured leaf
    """
    return eval_mode(model, freeze=True)
