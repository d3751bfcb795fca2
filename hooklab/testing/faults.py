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
- ``"save"``: :mod:`hooklab.store.format`'s file writers are wrapped so the Nth file written by
  :meth:`hooklab.TraceStore.save` (in the injecting thread) is cut in half and then an
  ``OSError`` (ENOSPC, "disk full") is raised: a crash in the middle of writing a run.

Faults act only in the thread that entered :func:`inject`. :func:`recording_writer` is a child
process body for kill tests: it records and saves real traces until it is killed. For a kill
at a known moment, :func:`halt_at` stops a save at one of :data:`HALT_POINTS` (e.g. the files
written, the rename not yet done), tells the parent where, and waits there to be killed.

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
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as _field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn.modules import module as _module

from hooklab.core.edits import Edit, EditSpec, scale
from hooklab.core.errors import HookKindError, StoreError
from hooklab.models.zoo import SimpleCNN
from hooklab.recording.recorder import record
from hooklab.store import format as store_format
from hooklab.store.runs import TraceStore

#: Where a fault can be injected.
POINTS = ("forward", "backward", "edit", "save")


class InjectedFault(Exception):
    """The exception a fault plan raises on purpose (not a hooklab error)."""


@dataclass(frozen=True)
class Tripwire(Edit):
    """An edit that returns its argument unchanged until its ``nth`` call (0-based), which raises
    :class:`InjectedFault`. ``nth < 0`` never raises. Not serialisable by design (``name`` is
    ``"tripwire"``, unknown to :func:`hooklab.core.edits.from_spec`)."""

    nth: int = -1
    name: ClassVar[str] = "tripwire"
    if TYPE_CHECKING:  # per-instance counters set in __post_init__, deliberately not dataclass
        # fields at run time (Edit.spec() is asdict(self): they must not appear in it)
        _calls: list[int] = _field(init=False, repr=False, compare=False)
        _fired: list[bool] = _field(init=False, repr=False, compare=False)

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


#: Where :func:`halt_at` stops :meth:`hooklab.TraceStore.save`: the store_format writer that has
#: just returned, and the files the run's temporary folder then holds (the rename not done).
HALT_POINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "after_events": ("write_events", (store_format.EVENTS,)),
    "after_tensors": ("write_tensors", (store_format.EVENTS, store_format.TENSORS)),
    "before_commit": ("write_manifest", (store_format.EVENTS, store_format.MANIFEST,
                                         store_format.TENSORS)),
}


@contextmanager
def halt_at(point: str, on_halt: Callable[[str], None], nth: int = 0) -> Iterator[None]:
    """Inside the block, the ``nth`` (0-based) save of this process stops at ``point``.

    There ``on_halt(temp_dir)`` is called (the run's temporary folder, as a string), then the
    calling thread blocks for good: this is for a child process that its parent SIGKILLs at
    exactly that point. Earlier saves complete normally.

    Example:
        >>> with halt_at("before_commit", lambda d: print("HALTED", d, flush=True), nth=1):
        ...     store.save(a); store.save(b)          # a commits; b stops before its rename
    """
    if point not in HALT_POINTS:
        raise ValueError(f"halt point must be one of {tuple(HALT_POINTS)}, got {point!r}")
    name = HALT_POINTS[point][0]
    real = getattr(store_format, name)
    calls = [0]

    def halting(path: Any, *args: Any, **kwargs: Any) -> Any:
        result = real(path, *args, **kwargs)
        n = calls[0]
        calls[0] = n + 1
        if n == int(nth):
            on_halt(str(os.path.dirname(os.fspath(path))))
            threading.Event().wait()  # until the parent's SIGKILL
        return result

    setattr(store_format, name, halting)
    try:
        yield
    finally:
        setattr(store_format, name, real)


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
        n += sum(abs(a - b) for a, b in zip(counts, old, strict=True))
    return n


def changed_flags(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Names whose ``requires_grad``, ``training`` or backward-hook flag changed."""
    out = []
    for field in ("requires_grad", "training", "full_backward_flag"):
        out += [f"{field}:{k}" for k, v in after[field].items() if before[field].get(k) != v]
    return out


def recording_writer(root: str, log_path: str, seed: int = 0, saves: int = 0,
                     ready: Any = None, halt: tuple[str, int, Any] | None = None) -> None:
    """Child-process body for kill tests: record SimpleCNN (every leaf, an edit, parameter
    gradients) and save each trace into the store at ``root``, appending each committed run id
    to ``log_path`` (one ``os.write`` of one line: atomic); forever if ``saves`` is 0.
    ``ready`` (an Event) is set once the store is open. On start it logs ``CLEANED n``: the
    temporary folders of dead writers that opening the store removed (a kill mid-save leaves
    one). Errors are logged as ``ERROR ...``. A batch of 16 makes each run ~10 MB, so a good
    share of the time is spent saving.

    ``halt = (point, nth, halted)``: the ``nth`` save stops at ``point`` (:func:`halt_at`),
    logs ``HALTED <point> <temp dir>``, sets the Event ``halted`` and waits to be killed."""

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
        append(f"CLEANED {len(store.cleaned)}")
        if ready is not None:
            ready.set()
        i = 0
        with _halting(halt, append):
            while saves <= 0 or i < saves:
                x = torch.randn(16, 3, 32, 32)
                with record(model, edits={"conv2": scale(0.5)}, param_grads=True,
                            meta={"writer_seed": seed, "i": i}) as rec:
                    rec.run(x)
                append(store.save(rec.trace, author="killed-writer", notes=str(i)))
                i += 1
    except BaseException as exc:  # noqa: BLE001 - report, then exit non-zero
        append(f"ERROR {type(exc).__name__}: {exc}")
        raise SystemExit(1) from None


@contextmanager
def _halting(halt: tuple[str, int, Any] | None, append: Callable[[str], None]) -> Iterator[None]:
    """:func:`halt_at` for a writer child: log ``HALTED <point> <dir>``, then set the Event."""
    if halt is None:
        yield
        return
    point, nth, halted = halt

    def on_halt(temp_dir: str) -> None:
        append(f"HALTED {point} {temp_dir}")
        halted.set()

    with halt_at(point, on_halt, nth):
        yield


class TinyNet(nn.Module):
    """A small CNN with what matters for hooks: BatchNorm, one in-place ReLU and one pool each
    called twice, functional ops between modules. Input ``(N, 3, 16, 16)``, 10 outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


_LAYER_CHOICES: list[Any] = [None, "conv*", "Conv2d", ["fc1", "conv2"], "pool", "relu"]
_EDIT_LAYERS = ["conv1", "bn1", "relu", "conv2", "fc1", "pool"]
#: nth drawn from range(0, N) per point: a TinyNet recording passes 10-20 forward and backward
#: points, 1-4 edit calls and 3 file writes, so some draws fall beyond them (no fault fires).
_NTH_RANGE = {"forward": 14, "backward": 14, "edit": 3, "save": 4}


def random_recording(rng: random.Random, fault: Fault) -> dict[str, Any]:
    """Random ``record()`` arguments for :class:`TinyNet`: layers, parameter/input gradients,
    tensors or statistics, a budget, ``fault.edit`` on a random layer (gradient or activation),
    sometimes a second edit, sometimes exploration hooks, and sometimes a full backward hook on
    ``bn1``, which PyTorch refuses (its output is changed in place by the ReLU)."""
    kwargs: dict[str, Any] = {"layers": rng.choice(_LAYER_CHOICES),
                              "param_grads": rng.random() < 0.5,
                              "input_grads": rng.random() < 0.3,
                              "keep_tensors": rng.random() < 0.8,
                              "max_bytes": rng.choice([None, 20_000, 10**8])}
    edits = [EditSpec(rng.choice(_EDIT_LAYERS), fault.edit, rng.choice(["grad", "activation"]))]
    if rng.random() < 0.5:
        edits.append(EditSpec(rng.choice(_EDIT_LAYERS), scale(0.5)))
    kwargs["edits"] = edits
    r = rng.random()
    if r < 0.25:
        kwargs["hooks"] = {"conv1": ["full_backward", "full_backward_pre", "forward_pre"]}
    elif r < 0.4:
        kwargs["hooks"] = {"fc1": ["backward"], "fc2": ["post_accumulate_grad", "tensor"]}
    elif r < 0.5:
        kwargs["hooks"] = {"bn1": ["full_backward"]}
    return kwargs


def campaign(model: nn.Module, x: torch.Tensor, n: int, store: Any, seed: int = 0,
             on_recorder: Any = None) -> dict[str, Any]:
    """``n`` recordings of ``model`` (a :class:`TinyNet`) on ``x``, each with a fault at a random
    point (:data:`POINTS`, random ``nth``) and random arguments (:func:`random_recording`); the
    recording saves its trace into ``store`` from inside the ``with`` block. After each one,
    the model's hooks and flags are compared with those before the campaign.

    Returns figures: attempts, injected (faults that fired, per point and in total), refused
    (HookKindErrors PyTorch's refusal caused), hooks_leaked, flags_changed, unexpected (outcomes
    other than the one the fault implies: a fault that fired without an error, an error without
    a fault...), saved (run ids committed). ``on_recorder(rec)`` is called with each recorder.
    """
    rng = random.Random(seed)
    before = module_state(model)
    figures: dict[str, Any] = {"attempts": 0, "injected": 0, "refused": 0, "hooks_leaked": 0,
                               "flags_changed": 0, "unexpected": [], "saved": [],
                               "per_point": {p: 0 for p in POINTS}}
    for i in range(n):
        point = rng.choice(POINTS)
        nth = rng.randrange(0, _NTH_RANGE[point])
        outcome = "ok"
        with inject(point, nth) as fault:
            kwargs = random_recording(rng, fault)
            refusable = "bn1" in kwargs.get("hooks", {})
            try:
                with record(model, **kwargs) as rec:
                    if on_recorder is not None:
                        on_recorder(rec)
                    rec.run(x, target=rng.choice([None, 3, "sum"]))
                    if rng.random() < 0.5:
                        rec.next_step()
                        rec.run(x)
                    figures["saved"].append(store.save(rec.trace, notes=f"campaign {i}"))
            except InjectedFault:
                outcome = "fault" if point != "save" else "unexpected"
            except StoreError as exc:
                chained = isinstance(exc.__cause__, OSError) and isinstance(
                    exc.__cause__.__cause__, InjectedFault)
                outcome = "fault" if point == "save" and chained else "unexpected"
            except HookKindError:
                outcome = "refused" if refusable else "unexpected"
            except Exception as exc:  # noqa: BLE001 - counted, not raised
                outcome = f"unexpected {type(exc).__name__}: {exc}"
            if outcome == "ok" and (fault.fired or refusable):
                outcome = "unexpected: no error"
            if outcome == "fault" and not fault.fired:
                outcome = "unexpected: error without fault"
        figures["attempts"] += 1
        if outcome == "fault":
            figures["injected"] += 1
            figures["per_point"][point] += 1
        elif outcome == "refused":
            figures["refused"] += 1
        elif outcome != "ok":
            figures["unexpected"].append(f"#{i} {point}[{nth}]: {outcome}")
        after = module_state(model)
        figures["hooks_leaked"] += leaked_hooks(before, after)
        figures["flags_changed"] += len(changed_flags(before, after))
    return figures
