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
  :meth:`hooklab.TraceStore.save` (in the injecting thread) is cut in half and then an
  ``OSError`` (ENOSPC, "disk full") is raised: a crash in the middle of writing a run.

Faults act only in the thread that entered :func:`inject`. :func:`recording_writer` is a child
process body for kill tests: it records and saves real traces until it is killed.

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


_WRITERS = ("write_events", "write_tensors", "write_manifest")
_save_lock = threading.Lock()
_save_faults: dict[int, Fault] = {}  # thread id -> its active save fault
_save_originals: dict[str, Any] = {}


def _wrap_writer(name: str, fn: Any) -> Any:
    def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
        result = fn(path, *args, **kwargs)
        fault = _save_faults.get(threading.get_ident())
        if fault is None:  # other threads save undisturbed
            return result
        try:
            fault.tick(name)
        except InjectedFault as exc:
            size = os.path.getsize(path)
            with open(path, "r+b") as f:  # leave a half-written file behind
                f.truncate(size // 2)
            raise OSError(errno.ENOSPC, f"No space left on device ({exc})", str(path)) from exc
        return result
    return wrapper


@contextmanager
def _failing_writes(fault: Fault) -> Iterator[None]:
    """Install the writer wrappers once for all threads (the first block in, the last out)."""
    me = threading.get_ident()
    with _save_lock:
        if me in _save_faults:
            raise RuntimeError("inject('save', ...) blocks cannot nest in one thread")
        if not _save_faults:
            for name in _WRITERS:
                _save_originals[name] = getattr(store_format, name)
                setattr(store_format, name, _wrap_writer(name, _save_originals[name]))
        _save_faults[me] = fault
    try:
        yield
    finally:
        with _save_lock:
            del _save_faults[me]
            if not _save_faults:
                for name, fn in _save_originals.items():
                    setattr(store_format, name, fn)
                _save_originals.clear()


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


def recording_writer(root: str, log_path: str, seed: int = 0, saves: int = 0,
                     ready: Any = None) -> None:
    """Child-process body for kill tests: record SimpleCNN (every leaf, an edit, parameter
    gradients) and save each trace into the store at ``root``, appending each committed run id
    to ``log_path`` (one ``os.write`` of one line: atomic); forever if ``saves`` is 0.
    ``ready`` (an Event) is set once the store is open. Errors are logged as ``ERROR ...``."""
    from hooklab.edits import scale
    from hooklab.models import SimpleCNN
    from hooklab.recorder import record
    from hooklab.store import TraceStore

    def append(line: str) -> None:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    try:
        torch.set_num_threads(1)
        torch.manual_seed(seed)
        model = SimpleCNN().eval()
        store = TraceStore(root)
        if ready is not None:
            ready.set()
        i = 0
        while saves <= 0 or i < saves:
            x = torch.randn(2, 3, 32, 32)
            with record(model, edits={"conv2": scale(0.5)}, param_grads=True,
                        meta={"writer_seed": seed, "i": i}) as rec:
                rec.run(x)
            append(store.save(rec.trace, author="killed-writer", notes=str(i)))
            i += 1
    except BaseException as exc:  # noqa: BLE001 - report, then exit non-zero
        append(f"ERROR {type(exc).__name__}: {exc}")
        raise SystemExit(1) from None
