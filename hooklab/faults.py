"""Fault injection for reliability tests: raise on purpose at the Nth forward call, backward
call, edit call or store save, then check that nothing was left behind.

The injected faults never touch the model's own hook dictionaries, so a before/after count of
every module's hooks measures only what the code under test left behind:

- ``"forward"``: a *global* module forward hook (``register_module_forward_hook``) counts module
  calls of the injecting thread and raises at the Nth one, inside the forward pass.
- ``"backward"``: the same global hook puts a tensor hook on each module output; the Nth firing
  during backward raises, inside autograd.
- ``"edit"``: :attr:`Fault.edit` is a hooklab edit (identity until its Nth call, then it
  raises); pass it to ``record(edits=...)`` as a gradient or activation edit.
- ``"save"``: :mod:`hooklab.store_format`'s file writers are wrapped so the Nth file written by
  :meth:`hooklab.TraceStore.save` is cut in half and then an ``OSError`` (ENOSPC, "disk full")
  is raised: a crash in the middle of writing a run.

Example:
    >>> with inject("backward", nth=7) as fault:
    ...     with hooklab.record(model) as rec:
    ...         rec.run(x)                    # raises InjectedFault in the 8th tensor hook
    >>> fault.fired
    True
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.nn.modules import module as _module

from hooklab import store_format
from hooklab.edits import Edit

#: Where a fault can be injected.
POINTS = ("forward", "backward", "edit", "save")


class InjectedFault(Exception):
    """The exception a fault plan raises on purpose (not a hooklab error)."""


@dataclass(frozen=True)
class Tripwire(Edit):
    """An edit that returns its argument unchanged until its ``nth`` call (0-based), which raises
    :class:`InjectedFault`. ``nth < 0`` never raises. Not serialisable by design (``name`` is
    ``"tripwire"``, unknown to :func:`hooklab.edits.from_spec`)."""

    nth: int = -1
    name: ClassVar[str] = "tripwire"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_calls", [0])
        object.__setattr__(self, "_fired", [False])

    @property
    def calls(self) -> int:
        return self._calls[0]

    @property
    def fired(self) -> bool:
        return self._fired[0]

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        n = self._calls[0]
        self._calls[0] = n + 1
        if n == self.nth:
            self._fired[0] = True
            raise InjectedFault(f"injected fault in edit call {n}")
        return t


class Fault:
    """State of one :func:`inject` block: how many candidate points passed, whether it fired."""

    def __init__(self, point: str, nth: int) -> None:
        self.point = point
        self.nth = int(nth)
        self.calls = 0
        self._fired = False
        self._lock = threading.Lock()
        self.edit = Tripwire(self.nth if point == "edit" else -1)

    @property
    def fired(self) -> bool:
        return self._fired or self.edit.fired

    def tick(self, what: str) -> None:
        """Count one candidate point; raise :class:`InjectedFault` at the ``nth``."""
        with self._lock:
            n = self.calls
            self.calls = n + 1
            hit = n == self.nth and not self._fired
            if hit:
                self._fired = True
        if hit:
            raise InjectedFault(f"injected fault at {self.point} point {n} ({what})")


@contextmanager
def inject(point: str, nth: int) -> Iterator[Fault]:
    """Raise :class:`InjectedFault` at the ``nth`` (0-based) occurrence of ``point`` inside the
    block (one of :data:`POINTS`); yields a :class:`Fault`. Everything installed is removed on
    exit, whatever happened."""
    if point not in POINTS:
        raise ValueError(f"fault point must be one of {POINTS}, got {point!r}")
    fault = Fault(point, nth)
    if point == "edit":
        yield fault
        return
    if point == "save":
        with _failing_writes(fault):
            yield fault
        return
    owner = threading.get_ident()
    tensor_handles: list[Any] = []

    def global_fwd(module: torch.nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() != owner:
            return
        what = type(module).__name__
        if point == "forward":
            fault.tick(what)
            return
        outs = output if isinstance(output, (tuple, list)) else (output,)
        for t in outs:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                def on_grad(grad: torch.Tensor, _what: str = what) -> None:
                    fault.tick(_what)
                tensor_handles.append(t.register_hook(on_grad))

    handle = _module.register_module_forward_hook(global_fwd)
    try:
        yield fault
    finally:
        handle.remove()
        for h in tensor_handles:
            h.remove()
        tensor_handles.clear()


@contextmanager
def _failing_writes(fault: Fault) -> Iterator[None]:
    originals = {name: getattr(store_format, name)
                 for name in ("write_events", "write_tensors", "write_manifest")}

    def wrap(name: str, fn: Any) -> Any:
        def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
            result = fn(path, *args, **kwargs)
            try:
                fault.tick(name)
            except InjectedFault as exc:
                size = os.path.getsize(path)
                with open(path, "r+b") as f:  # leave a half-written file behind
                    f.truncate(size // 2)
                raise OSError(errno.ENOSPC, f"No space left on device ({exc})", str(path)) from exc
            return result
        return wrapper

    for name, fn in originals.items():
        setattr(store_format, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(store_format, name, fn)


def module_state(model: torch.nn.Module) -> dict[str, Any]:
    """Everything a recording must leave as it was: hook counts of every module and parameter,
    ``requires_grad`` of every parameter, ``training`` of every module, PyTorch's backward-hook
    flag. Compare the values before and after."""
    hooks: dict[str, tuple[int, ...]] = {}
    for name, m in model.named_modules():
        hooks[name] = (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                       len(m._backward_pre_hooks),
                       len(getattr(m, "_forward_hooks_with_kwargs", {}) or {}),
                       len(getattr(m, "_forward_hooks_always_called", {}) or {}))
    for name, p in model.named_parameters():
        hooks["param:" + name] = (len(p._backward_hooks or {}),
                                  len(getattr(p, "_post_accumulate_grad_hooks", None) or {}))
    return {
        "hooks": hooks,
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "full_backward_flag": {n: m._is_full_backward_hook for n, m in model.named_modules()},
    }


def leaked_hooks(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Number of hooks in ``after`` that ``before`` did not have (both from :func:`module_state`),
    plus the number missing (a user's hook removed by mistake counts too)."""
    n = 0
    for key, counts in after["hooks"].items():
        old = before["hooks"].get(key, (0,) * len(counts))
        n += sum(abs(a - b) for a, b in zip(counts, old))
    return n


def changed_flags(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names whose ``requires_grad``, ``training`` or backward-hook flag changed."""
    out = []
    for field in ("requires_grad", "training", "full_backward_flag"):
        out += [f"{field}:{k}" for k, v in after[field].items() if before[field].get(k) != v]
    return out
