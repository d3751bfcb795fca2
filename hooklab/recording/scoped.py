"""Hooks that live for one block: registered inside it, all removed when it ends.

The one way library code outside the recorder attaches a short-lived hook (a CAM capture, a
dry forward that notes call order, a layer replaced by a batch of activations). Every handle is
removed on exit, also when the block raises and when a later registration in it fails.

Example:
    >>> with HookScope() as hooks:
    ...     hooks.forward(model.conv3, lambda m, i, out: store.append(out))
    ...     model(x)
    >>> hooks_on(model).empty
    True
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["HookScope"]


class HookScope:
    """Registers hooks and removes every one of them on ``__exit__`` (or :meth:`close`)."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> HookScope:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        """Remove every hook this scope registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def _keep(self, handle: RemovableHandle) -> RemovableHandle:
        self._handles.append(handle)
        return handle

    def forward(self, module: nn.Module, fn: Callable[..., Any], **kwargs: Any
                ) -> RemovableHandle:
        """``module.register_forward_hook(fn, **kwargs)`` for the scope's lifetime."""
        return self._keep(module.register_forward_hook(fn, **kwargs))

    def forward_pre(self, module: nn.Module, fn: Callable[..., Any], **kwargs: Any
                    ) -> RemovableHandle:
        """``module.register_forward_pre_hook(fn, **kwargs)`` for the scope's lifetime."""
        return self._keep(module.register_forward_pre_hook(fn, **kwargs))

    def tensor(self, t: torch.Tensor, fn: Callable[[torch.Tensor], Any]) -> RemovableHandle:
        """``t.register_hook(fn)`` (a gradient hook) for the scope's lifetime."""
        return self._keep(t.register_hook(fn))
